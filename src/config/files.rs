//! The files a config names for hookflow to read as code (Flow files, including those reached
//! by `goTo` / `executeFlow`, and transformers) stay in the config file's folder.
//!
//! Flow files are written by people who need not be trusted with the machine (and, later, by
//! the console), so a Flow must not make hookflow read `/etc/shadow`, hang on `/dev/zero` or a
//! pipe, or tell by an OS error whether some file exists. A path is refused when, with `..` and
//! symbolic links resolved, it leaves the config folder; when it is not a regular file; or when
//! it is over [`MAX_FILE_BYTES`]. A path that leaves the folder by its text alone (`../x`, an
//! absolute path elsewhere) is refused before the file system is asked anything.

use std::fmt;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Largest Flow or transformer file hookflow reads: far beyond any hand-written Flow, and small
/// enough that a mistaken path cannot make `check` or start-up read gigabytes.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Why a file was not read.
#[derive(Debug)]
pub enum FileError {
    /// With `..` and symbolic links resolved, the path leaves `root`.
    Outside { root: PathBuf },
    /// A directory, device, pipe or socket.
    NotRegular,
    /// Over [`MAX_FILE_BYTES`] (the size found).
    TooLarge(u64),
    /// The file system said no (missing, no permission, not UTF-8).
    Io(std::io::Error),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Outside { root } => write!(
                f,
                "it is outside the config folder {} (with \"..\" and symbolic links resolved); Flow and \
                 transformer files must be in that folder or below it: move the file there",
                root.display()
            ),
            FileError::NotRegular => {
                write!(f, "it is not a regular file (a directory, device or pipe); name a Flow or JavaScript file")
            }
            FileError::TooLarge(n) => write!(
                f,
                "it has {n} bytes, more than the {} MiB a Flow or transformer file may have; split it into \
                 several files (executeFlow, goTo)",
                MAX_FILE_BYTES >> 20
            ),
            FileError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Refuses `path` when its text alone leads out of `root` (relative paths start at the working
/// directory). Asks nothing of the file system.
pub fn check_inside(root: &Path, path: &Path) -> Result<(), FileError> {
    if lexical(path).starts_with(lexical(root)) { Ok(()) } else { Err(FileError::Outside { root: root.to_path_buf() }) }
}

/// The text of the file at `path`, if it is inside `root` (with `..` and symbolic links
/// resolved), a regular file and at most [`MAX_FILE_BYTES`].
pub fn read(root: &Path, path: &Path) -> Result<String, FileError> {
    check_inside(root, path)?;
    let real = path.canonicalize().map_err(FileError::Io)?;
    let real_root = root.canonicalize().map_err(FileError::Io)?;
    if !real.starts_with(&real_root) {
        return Err(FileError::Outside { root: root.to_path_buf() });
    }
    // Checked before opening: opening a pipe would wait for a writer.
    check_regular(&std::fs::metadata(&real).map_err(FileError::Io)?)?;
    let file = std::fs::File::open(&real).map_err(FileError::Io)?;
    // Again on what was opened, in case the file was swapped meanwhile.
    check_regular(&file.metadata().map_err(FileError::Io)?)?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text).map_err(FileError::Io)?;
    match text.len() as u64 {
        // The file grew after the size check.
        n if n > MAX_FILE_BYTES => Err(FileError::TooLarge(n)),
        // A byte order mark (some Windows editors write one) is no part of JSON or JavaScript.
        _ => Ok(text.strip_prefix('\u{feff}').map(str::to_owned).unwrap_or(text)),
    }
}

fn check_regular(meta: &std::fs::Metadata) -> Result<(), FileError> {
    match meta.len() {
        _ if !meta.is_file() => Err(FileError::NotRegular),
        n if n > MAX_FILE_BYTES => Err(FileError::TooLarge(n)),
        _ => Ok(()),
    }
}

/// `path` made absolute, with `.` dropped and `..` taken back, by its text alone.
pub fn lexical(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => {}
            // `/..` is `/`.
            Component::ParentDir => drop(out.pop()),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder with `config/` (the root) and a file beside it, outside the root.
    fn folders(name: &str) -> (PathBuf, PathBuf) {
        let top = std::env::temp_dir().join(format!("hookflow-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        std::fs::create_dir_all(top.join("config/flows")).unwrap();
        std::fs::write(top.join("config/flows/a.json"), "{}").unwrap();
        std::fs::write(top.join("secret.json"), "{}").unwrap();
        (top.clone(), top.join("config"))
    }

    #[test]
    fn paths_by_their_text() {
        let root = Path::new("/etc/hookflow");
        assert!(check_inside(root, Path::new("/etc/hookflow/flows/./a.json")).is_ok());
        assert!(check_inside(root, Path::new("/etc/hookflow/flows/../a.json")).is_ok());
        assert!(check_inside(root, Path::new("/etc/hookflow/../passwd")).is_err());
        assert!(check_inside(root, Path::new("/etc/hookflowx/a.json")).is_err(), "a prefix is not a folder");
        assert!(check_inside(root, Path::new("/dev/zero")).is_err());
        assert!(check_inside(root, Path::new("/../../etc/hookflow/a.json")).is_ok(), "/.. is /");
    }

    #[test]
    fn reads_inside_and_refuses_the_rest() {
        let (top, root) = folders("read");
        assert_eq!(read(&root, &root.join("flows/a.json")).unwrap(), "{}");
        assert!(matches!(read(&root, &root.join("flows/../../secret.json")), Err(FileError::Outside { .. })));
        assert!(matches!(read(&root, &top.join("secret.json")), Err(FileError::Outside { .. })));
        std::os::unix::fs::symlink(top.join("secret.json"), root.join("link.json")).unwrap();
        assert!(matches!(read(&root, &root.join("link.json")), Err(FileError::Outside { .. })));
        // A link that stays inside is fine.
        std::os::unix::fs::symlink(root.join("flows/a.json"), root.join("inside.json")).unwrap();
        assert_eq!(read(&root, &root.join("inside.json")).unwrap(), "{}");
        assert!(matches!(read(&root, &root.join("flows")), Err(FileError::NotRegular)));
        std::os::unix::fs::symlink("/dev/zero", root.join("zero.json")).unwrap();
        assert!(matches!(read(&root, &root.join("zero.json")), Err(FileError::Outside { .. })));
        let big = std::fs::File::create(root.join("big.json")).unwrap();
        big.set_len(MAX_FILE_BYTES + 1).unwrap();
        let too_large = read(&root, &root.join("big.json"));
        assert!(matches!(too_large, Err(FileError::TooLarge(n)) if n == MAX_FILE_BYTES + 1));
        assert!(matches!(read(&root, &root.join("nope.json")), Err(FileError::Io(_))));
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn the_root_itself_may_be_the_whole_file_system() {
        // With the config at `/`, /dev/zero is inside the folder and refused as a device.
        assert!(matches!(read(Path::new("/"), Path::new("/dev/zero")), Err(FileError::NotRegular)));
    }
}
