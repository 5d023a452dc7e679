/*
 * The floor of the policy benchmark: a Postfix policy server that does
 * nothing but frame requests and answer each with "action=DUNNO".
 *
 * Usage: floor PORT THREADS. Listens on 127.0.0.1:PORT; the accepting
 * thread hands connections round-robin to THREADS workers, each with its
 * own epoll set (level-triggered, non-blocking sockets). A worker reads
 * what a connection has, counts the requests that end in it (an empty
 * line, across reads) and answers them all with one write.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FD 65536
#define MAX_THREADS 64
#define READ_SIZE 65536

static const char ANSWER[] = "action=DUNNO\n\n";
#define ANSWER_LEN (sizeof ANSWER - 1)

/* Per descriptor: the last byte read was a newline. */
static unsigned char after_newline[MAX_FD];
static int epolls[MAX_THREADS];

static void answer(int fd, size_t count) {
    static __thread char out[READ_SIZE];
    while (count > 0) {
        size_t batch = count < sizeof out / ANSWER_LEN ? count : sizeof out / ANSWER_LEN;
        for (size_t i = 0; i < batch; i++)
            memcpy(out + i * ANSWER_LEN, ANSWER, ANSWER_LEN);
        size_t len = batch * ANSWER_LEN, done = 0;
        while (done < len) {
            ssize_t n = write(fd, out + done, len - done);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (n <= 0)
                return;
            done += (size_t)n;
        }
        count -= batch;
    }
}

static void *worker(void *arg) {
    int ep = epolls[(long)arg];
    static __thread char in[READ_SIZE];
    struct epoll_event events[64];
    for (;;) {
        int ready = epoll_wait(ep, events, 64, -1);
        for (int i = 0; i < ready; i++) {
            int fd = events[i].data.fd;
            ssize_t n = read(fd, in, sizeof in);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (n <= 0) {
                after_newline[fd] = 0;
                close(fd);
                continue;
            }
            size_t requests = 0;
            int newline = after_newline[fd];
            const char *p = in, *end = in + n;
            const char *q;
            while ((q = memchr(p, '\n', (size_t)(end - p))) != NULL) {
                if (q == p && newline) {
                    requests++;
                    newline = 0;
                } else {
                    newline = 1;
                }
                p = q + 1;
            }
            after_newline[fd] = p == end ? (unsigned char)newline : 0;
            if (requests > 0)
                answer(fd, requests);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PORT THREADS\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    long threads = atol(argv[2]);
    if (threads < 1 || threads > MAX_THREADS) {
        fprintf(stderr, "THREADS must be 1 to %d\n", MAX_THREADS);
        return 2;
    }
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(listener, 1024) != 0) {
        perror("bind/listen");
        return 1;
    }
    for (long t = 0; t < threads; t++) {
        pthread_t thread;
        epolls[t] = epoll_create1(EPOLL_CLOEXEC);
        if (epolls[t] < 0 || pthread_create(&thread, NULL, worker, (void *)t) != 0) {
            perror("epoll/thread");
            return 1;
        }
    }
    for (long next = 0;; next++) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            perror("accept");
            return 1;
        }
        if (fd >= MAX_FD) {
            close(fd);
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        after_newline[fd] = 0;
        struct epoll_event event = {.events = EPOLLIN, .data.fd = fd};
        epoll_ctl(epolls[next % threads], EPOLL_CTL_ADD, fd, &event);
    }
}
