//! The data directory: where it is, its ownership and permissions (berth's
//! secrets and its API socket live there, so nobody else may write it), and
//! the store opened in it, by the server and by `berth admin` alike.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::exit::CliError;
use crate::store::Store;

/// The database files beside each other in the data directory.
pub const DATABASE_FILES: [&str; 3] = ["berth.db", "berth.db-wal", "berth.db-shm"];
/// Permission bits that let group or others write.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// The data directory: the flag or `BERTH_DATA`, else `$XDG_DATA_HOME/berth`, else `~/.local/share/berth`.
pub fn data_dir(flag: Option<PathBuf>) -> Result<PathBuf, CliError> {
    if let Some(dir) = flag {
        return Ok(dir);
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("berth"));
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/berth")),
        None => Err(CliError::usage(
            "No data directory: set --data DIR, BERTH_DATA or HOME.",
        )),
    }
}

/// Open the store in the data directory, creating both (0700, 0600) when new;
/// a directory or database someone else owns or can write is refused.
pub fn open_store(dir: &Path) -> Result<Store, CliError> {
    check(dir)?;
    let path = dir.join(DATABASE_FILES[0]);
    let store = Store::open(&path).map_err(|e| {
        CliError::other(format!(
            "could not open the database {}: {e}",
            path.display()
        ))
    })?;
    make_private(dir);
    Ok(store)
}

/// Create the data directory (0700) if it is new, then refuse it, with a
/// sentence saying how to fix it, unless the user running berth owns it and
/// its database files and nobody else can write them; a planted symlink in
/// place of a database file is refused too.
pub fn check(dir: &Path) -> Result<(), CliError> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                CliError::other(format!(
                    "could not create the data directory {}: {e}",
                    dir.display()
                ))
            })?;
    }
    let me = current_uid(dir).map_err(|e| {
        CliError::other(format!(
            "could not check who owns the data directory {}: {e}",
            dir.display()
        ))
    })?;
    let meta = fs::metadata(dir).map_err(|e| {
        CliError::other(format!(
            "could not read the data directory {}: {e}",
            dir.display()
        ))
    })?;
    if !meta.is_dir() {
        return Err(CliError::other(format!(
            "The data directory {} is not a directory; pass another with --data DIR.",
            dir.display()
        )));
    }
    check_owned(dir, &meta, me, "data directory", "700")?;
    // Owned and closed to writers: hide it from readers too, as when berth makes it.
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    for name in DATABASE_FILES {
        let path = dir.join(name);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(CliError::other(format!(
                    "could not read {}: {e}",
                    path.display()
                )))
            }
        };
        if !meta.is_file() {
            return Err(CliError::other(format!(
                "The database file {} is not a regular file (a symlink or other planted entry?); check where it came from and remove it.",
                path.display()
            )));
        }
        check_owned(&path, &meta, me, "database file", "600")?;
    }
    Ok(())
}

/// Make the database files readable by their owner only: SQLite creates them
/// under the umask (0664 under `umask 002`), which the next start would refuse.
pub fn make_private(dir: &Path) {
    for name in DATABASE_FILES {
        let _ = fs::set_permissions(dir.join(name), fs::Permissions::from_mode(0o600));
    }
}

/// Refuse `path` unless `me` owns it and group and others cannot write it.
fn check_owned(
    path: &Path,
    meta: &Metadata,
    me: u32,
    what: &str,
    mode: &str,
) -> Result<(), CliError> {
    let path = path.display();
    if meta.uid() != me {
        return Err(CliError::other(format!(
            "The {what} {path} belongs to uid {}, not to the user running berth (uid {me}): whoever owns it can read berth's secrets and replace its API socket; run berth as its owner, or check its contents and take it over with `chown -R {me} {path}`.",
            meta.uid()
        )));
    }
    let bits = meta.mode() & 0o777;
    if bits & WRITABLE_BY_OTHERS != 0 {
        return Err(CliError::other(format!(
            "The {what} {path} can be written by group or others (mode {bits:o}), who could plant files or sockets in berth's place; check its contents, then run `chmod {mode} {path}`."
        )));
    }
    Ok(())
}

/// The user id berth runs as (std has no `geteuid`): the owner of this
/// process's `/proc/self` on Linux, else of a file it creates in `dir`.
fn current_uid(dir: &Path) -> io::Result<u32> {
    if let Ok(meta) = fs::metadata("/proc/self") {
        return Ok(meta.uid());
    }
    let suffix: u64 = rand::random();
    let probe = dir.join(format!(".berth-owner-{suffix:016x}"));
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    let uid = file.metadata().map(|m| m.uid());
    let _ = fs::remove_file(&probe);
    uid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn a_new_directory_is_made_private_and_accepted() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("a").join("data");
        check(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn writable_by_others_is_refused_with_the_fix() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("data");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let err = check(&dir).unwrap_err();
        assert!(err.message.contains("chmod 700"), "{}", err.message);
        assert_eq!(mode(&dir), 0o777, "refused, not silently changed");

        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        check(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let db = dir.join("berth.db-wal");
        fs::write(&db, "").unwrap();
        fs::set_permissions(&db, fs::Permissions::from_mode(0o620)).unwrap();
        let err = check(&dir).unwrap_err();
        assert!(err.message.contains("chmod 600"), "{}", err.message);
        make_private(&dir);
        assert_eq!(mode(&db), 0o600);
        check(&dir).unwrap();
    }

    #[test]
    fn a_symlink_in_place_of_the_database_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("data");
        check(&dir).unwrap();
        std::os::unix::fs::symlink(temp.path().join("elsewhere"), dir.join("berth.db")).unwrap();
        let err = check(&dir).unwrap_err();
        assert!(
            err.message.contains("not a regular file"),
            "{}",
            err.message
        );
    }

    #[test]
    fn the_current_uid_is_the_owner_of_what_berth_creates() {
        let temp = tempfile::tempdir().unwrap();
        let me = current_uid(temp.path()).unwrap();
        let file = temp.path().join("mine");
        fs::write(&file, "").unwrap();
        assert_eq!(fs::metadata(&file).unwrap().uid(), me);
    }
}
