//! `musicfs unmount`: ends a mount from another shell; the daemon notices
//! and exits cleanly.

use std::path::Path;
use std::process::Command;

/// Unmounts `mountpoint` with fusermount3 (which works for the mount's owner
/// without privileges), falling back to umount(2) when run as root.
pub fn unmount(mountpoint: &Path) -> Result<(), String> {
    let shown = mountpoint.display();
    let out = Command::new("fusermount3")
        .arg("-u")
        .arg(mountpoint)
        .output();
    match out {
        Ok(o) if o.status.success() => return Ok(()),
        Ok(o) => {
            let why = String::from_utf8_lossy(&o.stderr).trim().to_string();
            if !is_root() {
                return Err(format!("cannot unmount '{shown}': {why}"));
            }
        }
        Err(e) if !is_root() => return Err(format!("cannot run fusermount3: {e}")),
        Err(_) => {}
    }
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())
        .map_err(|_| format!("'{shown}' is not a valid path"))?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot unmount '{shown}': {}",
            std::io::Error::last_os_error()
        ))
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
