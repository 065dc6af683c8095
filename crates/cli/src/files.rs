//! The CLI's own files: its configuration directory (`$XDG_CONFIG_HOME/pedm`, or
//! `~/.config/pedm`; mode 0700) and atomic writes (a temporary file beside the target,
//! synced, then renamed: a reader sees the old file or the new one, never half of one).

use anyhow::{Context, Result};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// `$XDG_CONFIG_HOME/pedm`, or `~/.config/pedm`; `None` without either variable.
pub fn config_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("pedm"))
}

/// [`config_dir`] (joined with `sub`, if given), created with mode 0700 if missing.
pub fn private_dir(sub: Option<&str>) -> Result<PathBuf> {
    let mut dir = config_dir().context("cannot find the config directory (set HOME)")?;
    if let Some(s) = sub {
        dir.push(s);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Writes `bytes` to `path` atomically; a new file gets `mode` (less the umask).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
