//! The data folder on disk: private to the service's user. The database
//! holds password hashes and sealed secrets; the key file opens them.

#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use latchkey_store::{Keys, Store, StoreError};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

#[tokio::test]
async fn data_folder_and_database_files_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let store = Store::open_sqlite(&data).await.unwrap();
    store.ping().await.unwrap();
    Keys::load_or_create(&data).unwrap();
    assert_eq!(mode(&data), 0o700);
    for f in ["latchkey.db", "latchkey.db-wal", "latchkey.db-shm", "secret.key"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    store.close().await;

    // A folder and files an older version left open are tightened at open.
    chmod(&data, 0o755);
    chmod(&data.join("latchkey.db"), 0o644);
    let store = Store::open_sqlite(&data).await.unwrap();
    store.ping().await.unwrap();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("latchkey.db")), 0o600);
    store.close().await;
}

#[test]
fn a_key_file_others_can_read_is_refused_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    Keys::load_or_create(tmp.path()).unwrap();
    let key = tmp.path().join("secret.key");
    for m in [0o640, 0o604, 0o660] {
        chmod(&key, m);
        let err = Keys::load_or_create(tmp.path()).unwrap_err();
        let StoreError::Key(msg) = &err else { panic!("{err:?}") };
        assert!(msg.contains(&key.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("chmod 600 {}", key.display())), "{msg}");
    }
    chmod(&key, 0o400);
    Keys::load_or_create(tmp.path()).expect("owner-only key file is fine");
}
