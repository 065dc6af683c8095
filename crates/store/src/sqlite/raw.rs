//! SQLite through its C API on the calling thread, for the group committer.
//!
//! sqlx runs every SQLite statement on a connection thread of its own: each statement is a
//! message there and a message back, two thread wake-ups. A batch of group commit is a few
//! hundred statements, and those wake-ups were most of its cost. The committer therefore takes
//! the write connection's handle from sqlx for the length of a batch
//! (`SqliteConnection::lock_handle`: sqlx's thread runs nothing on it meanwhile) and runs the
//! statements itself through [`RawConn`], which [`crate::db::Conn::Raw`] puts behind the same
//! interface the shared write code uses. Every statement prepared is finalized when the
//! `RawConn` is dropped, before the handle goes back to sqlx.

use crate::arg::Arg;
use libsqlite3_sys as ffi;
use pedm_core::store::StoreError;
use sqlx::error::{DatabaseError, ErrorKind};
use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{CStr, c_int};
use std::ptr::NonNull;

/// Statements of one SQL text (several if it holds several, separated by `;`), each with the
/// argument (0-based) to bind to each of its parameters.
struct Prepared {
    stmt: NonNull<ffi::sqlite3_stmt>,
    args: Vec<usize>,
}

/// Distinct SQL texts kept prepared at most; past this all are finalized and prepared anew.
const MAX_PREPARED: usize = 256;

pub(crate) struct RawConn {
    db: NonNull<ffi::sqlite3>,
    prepared: HashMap<String, Vec<Prepared>>,
}

/// A column value as stored.
#[derive(Debug, Clone)]
enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// A result row: column names and values.
pub(crate) struct RawRow {
    columns: Vec<(String, Value)>,
}

/// An error SQLite reported, with its extended result code (what sqlx's own error says, so
/// callers tell a unique-key clash from other failures the same way).
#[derive(Debug)]
struct RawError {
    code: c_int,
    message: String,
}

impl std::fmt::Display for RawError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl std::error::Error for RawError {}

impl DatabaseError for RawError {
    fn message(&self) -> &str {
        &self.message
    }
    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.code.to_string()))
    }
    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }
    fn kind(&self) -> ErrorKind {
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

// The handle is only used by the thread that holds the `RawConn` (and sqlx's thread is kept
// off it by the lock the caller holds).
unsafe impl Send for RawConn {}

impl RawConn {
    /// # Safety
    /// `db` must be an open connection that outlives the `RawConn` (or is let go of with
    /// [`Self::forget`]), and every call on the `RawConn` must happen while nothing else uses
    /// the connection (the caller holds sqlx's lock on it). Prepared statements stay between
    /// calls (reset, holding no lock).
    pub(crate) unsafe fn new(db: NonNull<ffi::sqlite3>) -> Self {
        RawConn {
            db,
            prepared: HashMap::new(),
        }
    }

    pub(crate) fn db(&self) -> NonNull<ffi::sqlite3> {
        self.db
    }

    /// Lets go without finalizing (the connection is gone, and its statements with it).
    pub(crate) fn forget(mut self) {
        self.prepared.clear();
    }

    fn error(&self) -> sqlx::Error {
        // SAFETY: `db` is open (see `new`); the message is copied before any other call.
        let (code, message) = unsafe {
            let code = ffi::sqlite3_extended_errcode(self.db.as_ptr());
            let msg = ffi::sqlite3_errmsg(self.db.as_ptr());
            let message = if msg.is_null() {
                String::new()
            } else {
                CStr::from_ptr(msg).to_string_lossy().into_owned()
            };
            (code, message)
        };
        sqlx::Error::Database(Box::new(RawError { code, message }))
    }

    /// The statements of `sql`, prepared once per `RawConn`.
    fn prepare(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        if self.prepared.contains_key(sql) {
            return Ok(());
        }
        if self.prepared.len() >= MAX_PREPARED {
            for (_, ps) in self.prepared.drain() {
                finalize_all(ps);
            }
        }
        let mut out = vec![];
        let bytes = sql.as_bytes();
        let mut offset = 0;
        while offset < bytes.len() {
            let mut stmt = std::ptr::null_mut();
            let mut tail = std::ptr::null();
            let rest = &bytes[offset..];
            // SAFETY: `rest` is valid for its length; SQLite writes the statement and the tail
            // pointer (inside `rest`).
            let rc = unsafe {
                ffi::sqlite3_prepare_v2(
                    self.db.as_ptr(),
                    rest.as_ptr().cast(),
                    rest.len() as c_int,
                    &mut stmt,
                    &mut tail,
                )
            };
            if rc != ffi::SQLITE_OK {
                let e = self.error();
                finalize_all(out);
                return Err(e);
            }
            let used = if tail.is_null() {
                rest.len()
            } else {
                (tail as usize) - (rest.as_ptr() as usize)
            };
            offset += used.max(1);
            // Only whitespace or a comment: no statement.
            let Some(stmt) = NonNull::new(stmt) else {
                continue;
            };
            // SAFETY: `stmt` was just prepared.
            let n = unsafe { ffi::sqlite3_bind_parameter_count(stmt.as_ptr()) };
            let mut args = Vec::with_capacity(n as usize);
            let mut next = 0;
            for i in 1..=n {
                // SAFETY: `i` is a parameter index of `stmt`; the name lives as long as it.
                let name = unsafe { ffi::sqlite3_bind_parameter_name(stmt.as_ptr(), i) };
                let index = if name.is_null() {
                    // `?`: the next argument.
                    next += 1;
                    next - 1
                } else {
                    // SAFETY: a NUL-terminated name owned by `stmt`.
                    let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
                    match name
                        .strip_prefix(['$', '?'])
                        .and_then(|n| n.parse::<usize>().ok())
                    {
                        Some(n) if n >= 1 => n - 1,
                        _ => {
                            finalize_all(out);
                            // SAFETY: not used after this.
                            unsafe { ffi::sqlite3_finalize(stmt.as_ptr()) };
                            return Err(sqlx::Error::Protocol(format!(
                                "unsupported SQL parameter {name}"
                            )));
                        }
                    }
                };
                args.push(index);
            }
            out.push(Prepared { stmt, args });
        }
        self.prepared.insert(sql.to_string(), out);
        Ok(())
    }

    /// Binds `args` to `p`. Text and blobs are copied by SQLite (`SQLITE_TRANSIENT`).
    fn bind(&self, p: &Prepared, args: &[Arg]) -> Result<(), sqlx::Error> {
        let s = p.stmt.as_ptr();
        for (i, &a) in p.args.iter().enumerate() {
            let i = i as c_int + 1;
            // SAFETY: `s` is a prepared statement with parameter `i`; pointers and lengths come
            // from live Rust values, and SQLite copies them before returning.
            let rc = unsafe {
                match args.get(a) {
                    None | Some(Arg::Text(None)) | Some(Arg::Int(None)) => {
                        ffi::sqlite3_bind_null(s, i)
                    }
                    Some(Arg::Text(Some(t))) => ffi::sqlite3_bind_text64(
                        s,
                        i,
                        t.as_ptr().cast(),
                        t.len() as u64,
                        ffi::SQLITE_TRANSIENT(),
                        ffi::SQLITE_UTF8 as u8,
                    ),
                    Some(Arg::Int(Some(v))) => ffi::sqlite3_bind_int64(s, i, *v),
                    Some(Arg::Bool(b)) => ffi::sqlite3_bind_int64(s, i, i64::from(*b)),
                    Some(Arg::Blob(v)) => ffi::sqlite3_bind_blob64(
                        s,
                        i,
                        v.as_ptr().cast(),
                        v.len() as u64,
                        ffi::SQLITE_TRANSIENT(),
                    ),
                }
            };
            if rc != ffi::SQLITE_OK {
                return Err(self.error());
            }
        }
        Ok(())
    }

    /// Runs every statement of `sql` with `args`, calling `row` for each result row (of the
    /// last statement that returns rows) until it returns false. Returns the number of rows
    /// inserted, updated or deleted.
    fn run(
        &mut self,
        sql: &str,
        args: &[Arg],
        mut row: impl FnMut(NonNull<ffi::sqlite3_stmt>) -> bool,
    ) -> Result<u64, sqlx::Error> {
        self.prepare(sql)?;
        // SAFETY: `db` is open.
        let before = unsafe { ffi::sqlite3_total_changes64(self.db.as_ptr()) };
        let statements = &self.prepared[sql];
        for p in statements {
            let s = p.stmt.as_ptr();
            let result = self.bind(p, args).and_then(|()| {
                loop {
                    // SAFETY: `s` is prepared and bound.
                    match unsafe { ffi::sqlite3_step(s) } {
                        ffi::SQLITE_ROW => {
                            if !row(p.stmt) {
                                break Ok(());
                            }
                        }
                        ffi::SQLITE_DONE => break Ok(()),
                        _ => break Err(self.error()),
                    }
                }
            });
            // SAFETY: `s` is prepared; resetting after an error returns the error again,
            // already taken above.
            unsafe {
                ffi::sqlite3_reset(s);
                ffi::sqlite3_clear_bindings(s);
            }
            result?;
        }
        // SAFETY: `db` is open.
        let after = unsafe { ffi::sqlite3_total_changes64(self.db.as_ptr()) };
        Ok((after - before).max(0) as u64)
    }

    /// Runs a statement (or several); returns the number of rows changed.
    pub(crate) fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64, sqlx::Error> {
        self.run(sql, args, |_| true)
    }

    /// Runs a query; returns up to `limit` rows.
    pub(crate) fn query(
        &mut self,
        sql: &str,
        args: &[Arg],
        limit: Option<usize>,
    ) -> Result<Vec<RawRow>, sqlx::Error> {
        let mut rows = vec![];
        self.run(sql, args, |s| {
            rows.push(read_row(s));
            limit.is_none_or(|l| rows.len() < l)
        })?;
        Ok(rows)
    }

    /// Whether a transaction is open.
    pub(crate) fn in_transaction(&self) -> bool {
        // SAFETY: `db` is open.
        unsafe { ffi::sqlite3_get_autocommit(self.db.as_ptr()) == 0 }
    }
}

impl Drop for RawConn {
    fn drop(&mut self) {
        for (_, ps) in self.prepared.drain() {
            finalize_all(ps);
        }
    }
}

fn finalize_all(ps: Vec<Prepared>) {
    for p in ps {
        // SAFETY: prepared by us, finalized once.
        unsafe { ffi::sqlite3_finalize(p.stmt.as_ptr()) };
    }
}

fn read_row(s: NonNull<ffi::sqlite3_stmt>) -> RawRow {
    let s = s.as_ptr();
    // SAFETY: `s` has a current row; every pointer read is copied before the next call on it.
    unsafe {
        let n = ffi::sqlite3_column_count(s);
        let mut columns = Vec::with_capacity(n as usize);
        for i in 0..n {
            let name = ffi::sqlite3_column_name(s, i);
            let name = if name.is_null() {
                String::new()
            } else {
                CStr::from_ptr(name).to_string_lossy().into_owned()
            };
            let value = match ffi::sqlite3_column_type(s, i) {
                ffi::SQLITE_INTEGER => Value::Int(ffi::sqlite3_column_int64(s, i)),
                ffi::SQLITE_FLOAT => Value::Real(ffi::sqlite3_column_double(s, i)),
                ffi::SQLITE_TEXT => {
                    let p = ffi::sqlite3_column_text(s, i);
                    let len = ffi::sqlite3_column_bytes(s, i) as usize;
                    if p.is_null() {
                        Value::Text(String::new())
                    } else {
                        let b = std::slice::from_raw_parts(p, len);
                        Value::Text(String::from_utf8_lossy(b).into_owned())
                    }
                }
                ffi::SQLITE_BLOB => {
                    let p = ffi::sqlite3_column_blob(s, i);
                    let len = ffi::sqlite3_column_bytes(s, i) as usize;
                    if p.is_null() || len == 0 {
                        Value::Blob(vec![])
                    } else {
                        Value::Blob(std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec())
                    }
                }
                _ => Value::Null,
            };
            columns.push((name, value));
        }
        RawRow { columns }
    }
}

/// `v` as a `T`, if `T` is exactly `V`.
fn cast<T: 'static, V: 'static>(v: V) -> Option<T> {
    (Box::new(v) as Box<dyn Any>)
        .downcast::<T>()
        .ok()
        .map(|b| *b)
}

impl RawRow {
    /// The column `col` as a `T`: the Rust types the store reads (`i64`, `i32`, `bool`, `f64`,
    /// `String`, `Vec<u8>` and their `Option`s).
    pub(crate) fn get<T: 'static>(&self, col: &str) -> Result<T, StoreError> {
        let v = self
            .columns
            .iter()
            .find(|(n, _)| n == col)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| StoreError::Corrupt(format!("column {col}: not in the row")))?;
        let t = TypeId::of::<T>();
        let out: Option<T> = match v {
            Value::Null => {
                if t == TypeId::of::<Option<i64>>() {
                    cast(None::<i64>)
                } else if t == TypeId::of::<Option<String>>() {
                    cast(None::<String>)
                } else if t == TypeId::of::<Option<Vec<u8>>>() {
                    cast(None::<Vec<u8>>)
                } else if t == TypeId::of::<Option<bool>>() {
                    cast(None::<bool>)
                } else if t == TypeId::of::<Option<i32>>() {
                    cast(None::<i32>)
                } else if t == TypeId::of::<Option<f64>>() {
                    cast(None::<f64>)
                } else {
                    None
                }
            }
            Value::Int(i) => cast(i)
                .or_else(|| cast(Some(i)))
                .or_else(|| cast(i != 0))
                .or_else(|| cast(Some(i != 0)))
                .or_else(|| i32::try_from(i).ok().and_then(cast))
                .or_else(|| i32::try_from(i).ok().and_then(|i| cast(Some(i)))),
            Value::Real(f) => cast(f).or_else(|| cast(Some(f))),
            Value::Text(s) => cast(s.clone()).or_else(|| cast(Some(s))),
            Value::Blob(b) => cast(b.clone()).or_else(|| cast(Some(b))),
        };
        out.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "column {col}: cannot be read as {}",
                std::any::type_name::<T>()
            ))
        })
    }
}
