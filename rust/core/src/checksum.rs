//! Content checksums for the manifest: a shard is recognised by its bytes.

use std::io::Read;
use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

use crate::error::Result;

/// XXH3-128 of a file's bytes as 32 hex digits, read in 1 MiB blocks.
///
/// # Errors
///
/// Any I/O error reading the file.
pub fn file_checksum(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Xxh3::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(format!("{:032x}", hasher.digest128()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_sees_every_byte() {
        let dir = std::env::temp_dir().join(format!("tm-checksum-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a");
        std::fs::write(&a, vec![7u8; 3 << 20]).unwrap();
        let first = file_checksum(&a).unwrap();
        let mut bytes = vec![7u8; 3 << 20];
        bytes[(3 << 20) - 1] = 8;
        std::fs::write(&a, bytes).unwrap();
        assert_ne!(first, file_checksum(&a).unwrap());
        assert_eq!(first.len(), 32);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
