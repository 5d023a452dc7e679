//! Which filter a name means: the built-in `postfix`, a
//! `[[logwatch.filter]]`, or a fail2ban filter file.

use std::path::Path;

use super::{
    filter::{self, Filter, FilterError},
    postfix,
};

/// A filter name that gives no filter.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("{0}")]
    Spec(String),
}

/// A `[[logwatch.filter]]`: its name, failregex and ignoreregex lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserFilter {
    pub name: String,
    pub failregex: Vec<String>,
    pub ignoreregex: Vec<String>,
    /// Its lines all come from a fail2ban filter `file`: matched as
    /// fail2ban matches them ([`Filter::with_date_separator`]).
    pub fail2ban: bool,
}

impl UserFilter {
    fn compile(&self) -> Result<Filter, FilterError> {
        let filter = Filter::new(&self.name, &self.failregex, &self.ignoreregex)?;
        Ok(if self.fail2ban {
            filter.with_date_separator()
        } else {
            filter
        })
    }
}

/// Resolves `--filter`: `postfix` (built-in, with `mode`), a fail2ban
/// filter file path (optionally `PATH[mode=M]`), or one of `user` filters.
pub fn resolve_filter(
    spec: &str,
    mode: Option<&str>,
    user: &[UserFilter],
) -> Result<Filter, ResolveError> {
    let (name, mut params) = filter::split_params(spec);
    if let Some(mode) = mode {
        params.retain(|(k, _)| k != "mode");
        params.push(("mode".to_owned(), mode.to_owned()));
    }
    let param_mode = params
        .iter()
        .find(|(k, _)| k == "mode")
        .map(|(_, v)| v.as_str());
    if name == "postfix" {
        let mode = param_mode
            .unwrap_or("more")
            .parse::<postfix::Mode>()
            .map_err(ResolveError::Spec)?;
        return Ok(postfix::filter(mode)?);
    }
    if let Some(filter) = user.iter().find(|f| f.name == name) {
        return Ok(filter.compile()?);
    }
    if name.contains('/') || Path::new(name).extension().is_some_and(|e| e == "conf") {
        let imported = filter::import_fail2ban(Path::new(name), &params)?;
        let filter = Filter::new(spec, &imported.failregex, &imported.ignoreregex)?;
        return Ok(filter.with_date_separator());
    }
    Err(ResolveError::Spec(format!(
        "unknown filter {name:?}: use `postfix`, a fail2ban filter file path, or a [[logwatch.filter]] name from --config"
    )))
}
