//! Policy sets as the CLI reads them: files as given, `*.cedar` files under directories.

use anyhow::{Context, Result, bail};
use pedm_api::PolicySource;
use std::path::{Path, PathBuf};

/// Files as given, and every `*.cedar` file under given directories (sorted; names relative
/// to the directory so the same tree applies the same way from anywhere).
pub fn read_sources(paths: &[PathBuf]) -> Result<Vec<PolicySource>> {
    let mut out = vec![];
    for p in paths {
        if p.is_dir() {
            let mut files = vec![];
            collect_cedar(p, &mut files)?;
            if files.is_empty() {
                bail!("no *.cedar files under {}", p.display());
            }
            files.sort();
            for f in files {
                let name = f.strip_prefix(p).unwrap_or(&f).display().to_string();
                out.push(PolicySource {
                    name,
                    text: read(&f)?,
                });
            }
        } else {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push(PolicySource {
                name,
                text: read(p)?,
            });
        }
    }
    Ok(out)
}

fn read(p: &Path) -> Result<String> {
    let meta = std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
    if meta.len() > 1024 * 1024 {
        bail!(
            "{} is {} bytes; policy sets are limited to 1 MiB",
            p.display(),
            meta.len()
        );
    }
    std::fs::read_to_string(p).with_context(|| format!("cannot read {} as UTF-8 text", p.display()))
}

fn collect_cedar(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = e?.path();
        if path.is_dir() {
            collect_cedar(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "cedar") {
            out.push(path);
        }
    }
    Ok(())
}
