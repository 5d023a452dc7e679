//! Binding a UNIX stream socket safely: a stale socket of a dead process
//! is removed, a live one is never taken over, anything else at the path
//! is left alone; the mode is set before anyone can connect.

use std::{
    fs, io,
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use tokio::net::UnixListener;

/// Why a UNIX socket (the control socket, a policy listener) could not be
/// opened. `role` names it, e.g. "control socket".
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{role} {path}: another process is already listening there")]
    InUse { role: &'static str, path: PathBuf },
    #[error("{role} {path} exists and is not a socket; remove it or change the configuration")]
    NotASocket { role: &'static str, path: PathBuf },
    #[error("{role} {path}: {operation}: {source}")]
    Io {
        role: &'static str,
        path: PathBuf,
        operation: &'static str,
        source: io::Error,
    },
}

/// Binds a UNIX stream socket with `mode`. A socket file left by a dead
/// process is removed; a live one is never taken over, and a file that is
/// not a socket is left alone.
pub fn bind_unix(path: &Path, mode: u32, role: &'static str) -> Result<UnixListener, BindError> {
    let io_error = |operation| {
        move |source| BindError::Io {
            role,
            path: path.to_owned(),
            operation,
            source,
        }
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_error("creating its directory"))?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(BindError::NotASocket {
                role,
                path: path.to_owned(),
            });
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(BindError::InUse {
                    role,
                    path: path.to_owned(),
                });
            }
            Err(_) => fs::remove_file(path).map_err(io_error("removing the stale socket"))?,
        },
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(io_error("inspecting")(source)),
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(io_error("binding"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_error("setting its mode"))?;
    listener
        .set_nonblocking(true)
        .map_err(io_error("setting non-blocking"))?;
    UnixListener::from_std(listener).map_err(io_error("registering with the runtime"))
}
