//! Starting the real `pedmd`: shared by the end-to-end tests and the scale benchmarks.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

/// Waits for `pedmd listening on URL` on the child's stdout (which must be piped) and returns
/// the URL, or `None` (the child killed) if it does not come within `limit`.
pub fn wait_listening(child: &mut Child, limit: Duration) -> Option<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end even after the URL was found: pedmd prints more lines after it
        // (the admin token's file, the dev CA), and a closed pipe would make it exit.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    loop {
        match rx.recv_timeout(limit) {
            Ok(line) => {
                if let Some(u) = line.strip_prefix("pedmd listening on ") {
                    return Some(u.to_string());
                }
            }
            Err(_) => {
                let _ = child.kill();
                return None;
            }
        }
    }
}
