//! Which boot of the machine this is: a power loss or an OS crash always ends one, a
//! process crash never does.

use std::sync::OnceLock;

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// Linux's random id of the current boot (a UUID, as two words), or `None` where it cannot
/// be read: then every opener alone with a partition takes it for a restart, which is
/// slower (recovery reads back the unsynced part), never wrong.
pub(super) fn id() -> Option<[u64; 2]> {
    static ID: OnceLock<Option<[u64; 2]>> = OnceLock::new();
    *ID.get_or_init(|| parse(&std::fs::read_to_string(BOOT_ID).ok()?))
}

fn parse(text: &str) -> Option<[u64; 2]> {
    let hex: String = text.trim().chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let id = u128::from_str_radix(&hex, 16).ok().filter(|&id| id != 0)?;
    Some([(id >> 64) as u64, id as u64])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_id_is_read_as_two_nonzero_words() {
        assert_eq!(
            parse("4f0e8a3c-1b2d-4e5f-8a9b-0c1d2e3f4a5b\n"),
            Some([0x4f0e_8a3c_1b2d_4e5f, 0x8a9b_0c1d_2e3f_4a5b])
        );
        assert_eq!(parse("00000000-0000-0000-0000-000000000000"), None);
        assert_eq!(parse("not a boot id"), None);
        if std::path::Path::new(BOOT_ID).exists() {
            assert!(id().is_some());
        }
    }
}
