//! Replacing a small file atomically and durably: write a sibling
//! `*.tmp`, fsync it, rename it over the file, fsync the directory. A
//! crash at any point leaves either the old file or the new one, whole.
//! Cursors, saved sessions and the catalog keep their state this way.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// Replaces the file at `path` with `contents`. Blocking file I/O.
pub fn replace(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut out = File::create(&tmp)?;
        out.write_all(contents)?;
        out.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        replace(&path, b"first").expect("write");
        replace(&path, b"second").expect("replace");
        assert_eq!(fs::read(&path).expect("read"), b"second");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }
}
