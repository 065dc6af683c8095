//! `pedm device enroll|list|approve|revoke`: this machine as a trusted device. The key is made
//! here (`$XDG_CONFIG_HOME/pedm/device-key.pem`, 0600) with its certificate beside it; every
//! later `pedm` call to the same server presents it, so policy sees `context.device`.

use crate::ctx::Ctx;
use crate::output::{self, Detail, Row, time};
use anyhow::{Context, Result};
use jiff::Timestamp;
use pedm_agent::identity::{IdentityFiles, new_key_and_csr};
use pedm_api::device::{Device, EnrollDevice, Posture};
use serde::{Deserialize, Serialize};

/// Which server and device the files beside it are for.
#[derive(Serialize, Deserialize)]
struct DeviceFile {
    url: String,
    id: String,
}

fn files() -> Option<IdentityFiles> {
    let d = crate::files::config_dir()?;
    Some(IdentityFiles {
        cert: d.join("device-cert.pem"),
        key: d.join("device-key.pem"),
    })
}

/// This machine's device certificate and key as one PEM, if it is enrolled with `url`.
pub fn identity_for(url: &str) -> Option<Vec<u8>> {
    let d = crate::files::config_dir()?;
    let f: DeviceFile =
        serde_json::from_str(&std::fs::read_to_string(d.join("device.json")).ok()?).ok()?;
    if f.url.trim_end_matches('/') != url.trim_end_matches('/') || !url.starts_with("https://") {
        return None;
    }
    files()?.read().ok().map(|(_, pem)| pem)
}

/// What this machine can say about itself (Linux): the OS, its release, whether a dm-crypt
/// device exists (disk encryption). Screen lock is not knowable here: left out.
fn posture() -> Posture {
    let os_version = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        });
    let crypt = std::fs::read_dir("/sys/block").ok().map(|entries| {
        entries.flatten().any(|e| {
            std::fs::read_to_string(e.path().join("dm/uuid")).is_ok_and(|u| u.starts_with("CRYPT-"))
        })
    });
    Posture {
        os: Some(std::env::consts::OS.to_string()),
        os_version,
        disk_encrypted: crypt,
        screen_lock: None,
    }
}

pub async fn enroll(ctx: &Ctx, name: Option<String>) -> Result<()> {
    let url = ctx.client.base_url().to_string();
    anyhow::ensure!(
        url.starts_with("https://"),
        "devices enroll only with an https:// server"
    );
    let files = files().context("cannot find the config directory (set HOME)")?;
    let d = crate::files::private_dir(None)?;
    let name = name.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "device".into())
    });
    let (key, csr) = new_key_and_csr("device")?;
    let e = ctx
        .client
        .enroll_device(&EnrollDevice {
            name,
            csr,
            posture: posture(),
        })
        .await?;
    files.write(&e.certificate, &key)?;
    let note = serde_json::to_string(&DeviceFile {
        url,
        id: e.device.id.clone(),
    })?;
    pedm_agent::outbox::write_atomically(&d.join("device.json"), note.as_bytes())?;
    ctx.emit(&e.device, || {
        format!(
            "device {} enrolled ({}); it is trusted once an admin runs: pedm device approve {}\n",
            e.device.id,
            output::time(e.device.enrolled_at),
            e.device.id
        )
    })
}

fn state(d: &Device) -> String {
    match (d.revoked_at, d.approved_at) {
        (Some(at), _) => format!("revoked {}", time(at)),
        (None, Some(_)) => "trusted".into(),
        (None, None) => "waiting for approval".into(),
    }
}

impl Row for Device {
    const HEADER: &'static [&'static str] = &["ID", "OWNER", "NAME", "ENROLLED", "STATE", "OS"];
    fn cells(&self, _now: Timestamp) -> Vec<String> {
        vec![
            self.id.clone(),
            self.owner.clone(),
            self.name.clone(),
            time(self.enrolled_at),
            state(self),
            self.posture.os_version.clone().unwrap_or_default(),
        ]
    }
}

impl Detail for Device {
    fn fields(&self, _now: Timestamp) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("owner", self.owner.clone()),
            ("name", self.name.clone()),
            ("enrolled", time(self.enrolled_at)),
            ("state", state(self)),
            ("approved by", self.approved_by.clone().unwrap_or_default()),
            (
                "disk encrypted",
                self.posture
                    .disk_encrypted
                    .map_or("unknown".into(), |b| b.to_string()),
            ),
        ]
    }
}
