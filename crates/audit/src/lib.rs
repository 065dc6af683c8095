//! Audit-log cryptography for pedm: an RFC 6962 Merkle tree over the hash-chained events of
//! `pedm_core::audit`, Ed25519-signed checkpoints, exports, and offline verification with only
//! the public key.
//!
//! The events, their canonical serialisation and the hash chain are defined in
//! `pedm_core::audit` and are not changed here.
//!
//! # Merkle tree ([`merkle`])
//!
//! RFC 6962 §2.1 over SHA-256. Leaf *i* (0-based) is event `seq = i + 1`; its leaf data is the
//! event's 32-byte chain `hash`, so leaf hash = `SHA-256(0x00 || hash)`, node =
//! `SHA-256(0x01 || left || right)`, empty root = `SHA-256("")`. Inclusion and consistency proofs
//! are RFC 6962 audit paths (lists of 32-byte hashes, bottom-up). [`MerkleAccumulator`] keeps the
//! root of a growing log in O(log n).
//!
//! # Checkpoints ([`checkpoint`])
//!
//! A checkpoint signs `(size, root, time)`. Signed bytes:
//!
//! ```text
//! pedm-audit-checkpoint/v1
//! <key_id>
//! <size>
//! <root, 64 lowercase hex digits>
//! <time, RFC 3339 UTC, at most microseconds>
//! ```
//!
//! (each line ends with `\n`, including the last), pure Ed25519. Public key text form:
//! `ed25519:<base64 of 32 bytes>`; key id: the first 8 bytes of SHA-256 of the public key bytes,
//! as 16 hex digits. Secret key file: `ed25519-secret:<base64 of the 32-byte seed>\n`, mode 0600.
//! JSON of a signed checkpoint:
//! `{"size":N,"root":"<hex>","time":"<RFC 3339>","key_id":"<hex>","signature":"<base64>"}`.
//!
//! # Checkpoint notes ([`note`])
//!
//! The same head as a C2SP `tlog-checkpoint` signed note (`<origin>\n<size>\n<base64
//! root>\n`, an empty line, `— <origin> <base64(key ID || signature)>`), key ID
//! `SHA-256(origin || 0x0A || 0x01 || public key)[:4]`, plus witness `cosignature/v1` lines
//! (key ID with 0x04, signature `key ID || u64 time || Ed25519 over "cosignature/v1\ntime
//! <t>\n" || body`). A note checked with the log's key (and optionally N witnesses) becomes a
//! [`TrustedHead`] the verified log must extend.
//!
//! # Export format (JSON Lines, [`export`])
//!
//! One JSON object per line, `\n`-terminated, UTF-8:
//!
//! 1. header: `{"format":"pedm-audit-export","version":1,"created":"<RFC 3339>","key_id":"<hex>"}`
//!    (`key_id` and `source` optional; unknown header fields are ignored);
//! 2. checkpoint lines `{"checkpoint":{...signed checkpoint...}}`, sorted by size;
//! 3. event lines, in seq order from 1, each exactly the serde JSON of
//!    `pedm_core::audit::AuditEvent` (`{"seq":..,"at":..,"actor":..,"action":..,"outcome":..,
//!    "subject":..,"data":..,"prev_hash":"<hex>","hash":"<hex>"}`);
//! 4. end line: `{"end":{"events":N,"checkpoints":M}}`.
//!
//! A log whose first events were archived and pruned (`pedm audit archive`) has, after the
//! checkpoints (only those of at least that size) and before the first event, a line
//! `{"pruned":{"through":P,"hash":"<hex of event P's hash>","peaks":["<hex>",...]}}`: the
//! Merkle peaks of the tree over events 1..=P. The end line counts them in `events`. The
//! verifier takes it only with a signed checkpoint of size P with that root, and requires an
//! `audit.pruned` event later in the log whose `data.through` and `data.root` name P and that
//! root ([`FailureKind::Forged`] otherwise).
//!
//! Checkpoints come *before* the events so that cutting events off the end is caught by a signed
//! size, not only by the (unsigned) end line. A verifier also accepts a checkpoint line anywhere
//! after the header as long as it is not after the event that completes it (so a producer may
//! interleave each checkpoint right after its last event). An export of the live log should start
//! with a fresh checkpoint of the size being exported, so that every event is covered.
//!
//! ## What [`verify_export`] checks, in file order
//!
//! * the header (format, version, key id if present);
//! * each checkpoint: key id = the given key's ([`FailureKind::WrongKey`]), signature
//!   ([`FailureKind::BadSignature`]);
//! * each event: seq from 1 without gaps ([`FailureKind::Missing`] / [`FailureKind::Reordered`]
//!   / [`FailureKind::Inserted`]), `prev_hash` link ([`FailureKind::BrokenLink`]), content hash
//!   ([`FailureKind::Altered`]);
//! * when the events reach a checkpoint's size, the Merkle root of the events so far equals the
//!   signed root ([`FailureKind::Forged`], naming the range since the last matching checkpoint);
//! * at the end: no checkpoint signs more events than present, the end line is there and its
//!   count matches ([`FailureKind::Truncated`]); a file cut inside a line is
//!   [`FailureKind::Truncated`] too.
//!
//! Events after the last verified checkpoint are reported as a warning in
//! [`VerifyReport::warnings`], or fail as [`FailureKind::Uncovered`] with
//! [`VerifyOptions::require_covered`] (the CLI should expose it as `--require-covered`). What a
//! file alone cannot show: that nothing was cut off together with the newest checkpoints. Pass
//! the newest checkpoint you hold (from the live server or an earlier export) in
//! [`VerifyOptions::trusted_checkpoints`] to rule that out.
//!
//! The failure names the first bad position: seq (and a range for `Forged`/`Truncated`) and the
//! line number. Parsing and hashing run on worker threads; all order-dependent checks run in file
//! order, so the result does not depend on the thread count.
//!
//! # CSV ([`CsvWriter`])
//!
//! RFC 4180 (comma separator, `"` quoting when needed, CRLF), header row
//! `seq,at,actor,action,outcome,subject,data,prev_hash,hash`: `at` RFC 3339, `subject` empty when
//! absent, `data` compact JSON, hashes hex. Values are not altered to defuse spreadsheet formulas
//! (that would break the hashes); open in a spreadsheet with care.
//!
//! # OCSF ([`OcsfWriter`], [`ocsf_event`])
//!
//! One JSON object per line, shaped after OCSF 1.1 (not validated against the full schema):
//!
//! | action | class (`class_uid`) | `category_uid` | `activity_id` |
//! |---|---|---|---|
//! | `auth.*` | Authentication (3002) | 3 IAM | 1 Logon (`login`, `failed`, `succeeded`), 2 Logoff (`logout`), 99 |
//! | `grant.*` | User Access Management (3005) | 3 IAM | 1 Assign Privileges (`started`, `created`, `activated`), 2 Revoke Privileges (`ended`, `revoked`, `expired`, `released`), 99 |
//! | `user.*`, `token.*` | Account Change (3001) | 3 IAM | 1 Create, 2 Enable, 5 Disable, 6 Delete (`deleted`, `revoked`), 99 |
//! | `group.*` | Group Management (3006) | 3 IAM | 3 Add User (`member_added`), 4 Remove User (`member_removed`), 5 Delete, 6 Create, 99 |
//! | anything else (`request.*`, `policy.*`, ...) | API Activity (6003) | 6 Application Activity | 1 Create (`created`), 2 Read, 4 Delete, 3 Update (any other verb) |
//!
//! Common fields: `type_uid` = `class_uid * 100 + activity_id`, `class_name`, `activity_name`,
//! `time` (epoch milliseconds), `status_id`/`status` (1 Success; 2 Failure for both `denied` and
//! `failure`), `status_detail` (our outcome), `severity_id` (1 Informational for success, 2 Low
//! for failure, 3 Medium for denied), `message`, `actor.user.name` (our actor),
//! `metadata.product.name = "pedm"`, `metadata.uid` (seq as a string), `metadata.sequence` (seq),
//! `metadata.version = "1.1.0"`, and `unmapped` = `{action, subject, data, prev_hash, hash}`.
//! API Activity adds `api.operation` (our action) and `resources[0].uid` (our subject); User
//! Access Management adds `privileges: [subject]`; Authentication and Account Change add
//! `user.name` (the subject without `user:`).

pub mod bundle;
pub mod checkpoint;
pub mod export;
pub mod formats;
mod hashing;
pub mod merkle;
pub mod merkle_index;
pub mod note;
pub mod verify;

pub use checkpoint::{
    Checkpoint, CheckpointError, KeyError, PublicKey, SignedCheckpoint, SigningKey, verify,
};
pub use export::{
    ExportEnd, ExportHeader, ExportWriter, verify_export, verify_export_with, write_export,
};
pub use formats::{CsvWriter, OcsfWriter, ocsf_event};
pub use merkle::{
    EMPTY_ROOT, Hash, MerkleAccumulator, ProofError, Subtrees, consistency_proof,
    consistency_proof_in, inclusion_proof, inclusion_proof_in, range_hash, root,
    verify_consistency, verify_inclusion,
};
pub use merkle_index::{BLOCK, BlockError, MerkleIndex, Proof};
pub use note::{CheckpointNote, NoteError, NoteSignature, VerifierKey};
pub use verify::{
    FailureKind, PrunedBase, TrustedHead, Verifier, VerifyFailure, VerifyOptions, VerifyReport,
    verify_events,
};
