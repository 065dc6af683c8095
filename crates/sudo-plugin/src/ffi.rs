//! The C side: sudo's `struct approval_plugin` (`sudo_plugin.h`), exported as
//! `pedm_approval`. Everything `unsafe` in the plugin is here: reading sudo's NULL-terminated
//! string vectors, calling its `printf`, handing it an error string. Each entry point catches
//! panics (a panic denies: it never unwinds into sudo).

use crate::{Options, approve, check_of, options};
use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

const SUDO_APPROVAL_PLUGIN: c_uint = 4;
const SUDO_API_VERSION_MAJOR: c_uint = 1;
/// Approval plugins arrived with API 1.17 (sudo 1.9.0); nothing newer is used.
const SUDO_API_VERSION: c_uint = (SUDO_API_VERSION_MAJOR << 16) | 17;
const SUDO_CONV_ERROR_MSG: c_int = 0x0003;
const SUDO_CONV_INFO_MSG: c_int = 0x0004;

type Printf = unsafe extern "C" fn(c_int, *const c_char, ...) -> c_int;
type Strings = *const *const c_char;

type OpenFn = unsafe extern "C" fn(
    c_uint,
    *const c_void,
    Option<Printf>,
    Strings,
    Strings,
    c_int,
    Strings,
    Strings,
    Strings,
    *mut *const c_char,
) -> c_int;
type CheckFn = unsafe extern "C" fn(Strings, Strings, Strings, *mut *const c_char) -> c_int;

/// `struct approval_plugin`, field for field.
#[repr(C)]
pub struct ApprovalPlugin {
    kind: c_uint,
    version: c_uint,
    open: Option<OpenFn>,
    close: Option<unsafe extern "C" fn()>,
    check: Option<CheckFn>,
    show_version: Option<unsafe extern "C" fn(c_int) -> c_int>,
}

/// What `sudo.conf` names: `Plugin pedm_approval /path/libpedm_sudo.so [socket=...]`.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static pedm_approval: ApprovalPlugin = ApprovalPlugin {
    kind: SUDO_APPROVAL_PLUGIN,
    version: SUDO_API_VERSION,
    open: Some(open),
    close: Some(close),
    check: Some(check),
    show_version: Some(show_version),
};

/// Between `open` and `close` (sudo calls them around one `check`).
struct State {
    printf: Option<Printf>,
    user_info: Vec<String>,
    options: Result<Options, String>,
    /// The last error handed to sudo through `errstr`: valid until `close`.
    error: Option<CString>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn state() -> std::sync::MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A NULL-terminated vector of C strings (or NULL) as owned strings.
///
/// # Safety
/// `list` is NULL or points to a NULL-terminated array of NUL-terminated strings that stay
/// valid for the call, as sudo_plugin(5) promises for every vector it passes.
unsafe fn strings(list: Strings) -> Vec<String> {
    let mut out = vec![];
    if list.is_null() {
        return out;
    }
    let mut i = 0;
    loop {
        // SAFETY: the array is NULL-terminated (see above); we stop at the NULL.
        let p = unsafe { *list.add(i) };
        if p.is_null() {
            return out;
        }
        // SAFETY: each element is a NUL-terminated string valid for the call.
        out.push(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned());
        i += 1;
    }
}

/// Prints `msg` through sudo's `printf` (a message for the user on their terminal).
fn say(printf: Option<Printf>, kind: c_int, msg: &str) {
    let (Some(printf), Ok(msg)) = (printf, CString::new(msg.replace('\0', " "))) else {
        return;
    };
    // SAFETY: `printf` is the function sudo passed to `open`, valid until `close`; "%s\n"
    // consumes exactly the one NUL-terminated string given.
    unsafe { printf(kind, c"%s\n".as_ptr(), msg.as_ptr()) };
}

/// Keeps `msg` until `close` and points `errstr` at it.
fn set_error(st: &mut State, errstr: *mut *const c_char, msg: &str) {
    let Ok(c) = CString::new(msg.replace('\0', " ")) else {
        return;
    };
    if !errstr.is_null() {
        // SAFETY: sudo passes a valid `const char **` to store into; the string lives in
        // `STATE` until `close`, as the API requires.
        unsafe { *errstr = c.as_ptr() };
    }
    st.error = Some(c);
}

unsafe extern "C" fn open(
    version: c_uint,
    _conversation: *const c_void,
    printf: Option<Printf>,
    _settings: Strings,
    user_info: Strings,
    _submit_optind: c_int,
    _submit_argv: Strings,
    _submit_envp: Strings,
    plugin_options: Strings,
    errstr: *mut *const c_char,
) -> c_int {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: vectors from sudo, valid for the call (see `strings`).
        let (user_info, opts) = unsafe { (strings(user_info), strings(plugin_options)) };
        let mut st = State {
            printf,
            user_info,
            options: options(&opts),
            error: None,
        };
        let refusal = if version >> 16 != SUDO_API_VERSION_MAJOR {
            Some(format!(
                "pedm: this sudo speaks plugin API {}.{}, the pedm plugin {}.x",
                version >> 16,
                version & 0xffff,
                SUDO_API_VERSION_MAJOR
            ))
        } else {
            st.options
                .as_ref()
                .err()
                .map(|e| format!("pedm: sudo.conf: {e}"))
        };
        let status = match refusal {
            Some(msg) => {
                say(printf, SUDO_CONV_ERROR_MSG, &msg);
                set_error(&mut st, errstr, &msg);
                -1
            }
            None => 1,
        };
        *state() = Some(st);
        status
    }))
    .unwrap_or(-1)
}

unsafe extern "C" fn close() {
    let _ = catch_unwind(|| {
        *state() = None;
    });
}

unsafe extern "C" fn check(
    command_info: Strings,
    run_argv: Strings,
    _run_envp: Strings,
    errstr: *mut *const c_char,
) -> c_int {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: vectors from sudo, valid for the call (see `strings`).
        let (command_info, run_argv) = unsafe { (strings(command_info), strings(run_argv)) };
        let mut guard = state();
        let Some(st) = guard.as_mut() else {
            return -1;
        };
        let decided = match &st.options {
            Err(e) => Err(format!("pedm: sudo.conf: {e}")),
            Ok(options) => check_of(&st.user_info, &command_info, &run_argv)
                .map_err(|e| format!("pedm: {e}"))
                .and_then(|c| approve(options, &c)),
        };
        match decided {
            Ok(()) => 1,
            Err(msg) => {
                say(st.printf, SUDO_CONV_ERROR_MSG, &msg);
                set_error(st, errstr, &msg);
                0
            }
        }
    }))
    .unwrap_or(-1)
}

unsafe extern "C" fn show_version(_verbose: c_int) -> c_int {
    catch_unwind(|| {
        let printf = state().as_ref().and_then(|s| s.printf);
        say(
            printf,
            SUDO_CONV_INFO_MSG,
            concat!("pedm approval plugin version ", env!("CARGO_PKG_VERSION")),
        );
        1
    })
    .unwrap_or(-1)
}
