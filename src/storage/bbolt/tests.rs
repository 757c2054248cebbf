//! The writer's files read back, and a file real etcd 3.4.23 wrote (`etcdctl snapshot save`
//! of a member holding 300 small keys, a 10 kB value, a compaction, a lease, a user and a
//! role) read as etcdctl reads it.

use std::io::Cursor;

use super::*;

type Items = Vec<(Vec<u8>, Vec<u8>)>;

fn write(buckets: &[(&str, Items)]) -> Vec<u8> {
    let mut w = BoltWriter::new(Cursor::new(Vec::new())).unwrap();
    for (name, items) in buckets {
        let n = w
            .bucket::<_, BoltError>(name.as_bytes(), items.iter().cloned().map(Ok))
            .unwrap();
        assert_eq!(n, items.len() as u64);
    }
    let (out, size) = w.finish().unwrap();
    let bytes = out.into_inner();
    assert_eq!(
        bytes.len() as u64,
        size,
        "the file ends at the high-water mark"
    );
    assert_eq!(bytes.len() % PAGE_SIZE, 0);
    bytes
}

fn read_all(bytes: Vec<u8>) -> Vec<(Vec<u8>, Items)> {
    let r = BoltReader::open(bytes.into_boxed_slice()).unwrap();
    r.check_length().unwrap();
    r.buckets()
        .unwrap()
        .into_iter()
        .map(|(name, b)| {
            let mut items = Vec::new();
            r.for_each(&b, &mut |k: &[u8], v: &[u8], nested: bool| {
                assert!(!nested);
                items.push((k.to_vec(), v.to_vec()));
                Ok::<_, BoltError>(())
            })
            .unwrap();
            (name, items)
        })
        .collect()
}

fn keys(n: usize, key_len: usize, value_len: usize) -> Items {
    (0..n)
        .map(|i| {
            let mut k = format!("{i:08}").into_bytes();
            k.resize(key_len.max(8), b'k');
            (k, vec![(i % 251) as u8; value_len])
        })
        .collect()
}

#[test]
fn small_buckets_roundtrip_inline_in_name_order() {
    let a = keys(3, 8, 5);
    let bytes = write(&[
        ("zeta", a.clone()),
        ("alpha", Vec::new()),
        ("mid", a.clone()),
    ]);
    // Metas, freelist and the root bucket's one page: the small buckets take no page.
    assert_eq!(bytes.len(), 4 * PAGE_SIZE);
    let got = read_all(bytes);
    let names: Vec<_> = got.iter().map(|(n, _)| n.as_slice()).collect();
    assert_eq!(names, [&b"alpha"[..], b"mid", b"zeta"]);
    assert_eq!(got[0].1, Vec::new());
    assert_eq!(got[1].1, a);
    assert_eq!(got[2].1, a);
}

#[test]
fn many_keys_take_leaves_under_branch_pages() {
    // 1000-byte keys: 3 per leaf and 3 per branch page, so 300 keys need three levels of
    // branches above the leaves.
    let big = keys(300, 1000, 10);
    let small = keys(20_000, 17, 30);
    let bytes = write(&[("big", big.clone()), ("small", small.clone())]);
    assert!(bytes.len() > 100 * PAGE_SIZE);
    let r = BoltReader::open(bytes.clone().into_boxed_slice()).unwrap();
    let Some(Bucket::Page(root)) = r.bucket(b"big").unwrap() else {
        panic!("a large bucket is not inline");
    };
    let page = r.page(root).unwrap();
    assert_eq!(
        page::PageHeader::parse(&page).unwrap().flags,
        page::BRANCH_PAGE
    );
    let got = read_all(bytes);
    assert_eq!(got[0].1, big);
    assert_eq!(got[1].1, small);
}

#[test]
fn large_values_take_overflow_pages() {
    let mut items = keys(5, 8, 100);
    items[1].1 = vec![7; 3 * PAGE_SIZE + 5];
    items[3].1 = vec![9; 20 * PAGE_SIZE];
    let bytes = write(&[("key", items.clone())]);
    assert!(bytes.len() > 24 * PAGE_SIZE);
    assert_eq!(read_all(bytes)[0].1, items);
}

#[test]
fn keys_out_of_order_are_refused() {
    let mut w = BoltWriter::new(Cursor::new(Vec::new())).unwrap();
    let items = vec![(b"b".to_vec(), Vec::new()), (b"a".to_vec(), Vec::new())];
    let err = w
        .bucket::<_, BoltError>(b"x", items.into_iter().map(Ok))
        .unwrap_err();
    assert!(matches!(err, BoltError::Unsorted { .. }), "{err}");
}

#[test]
fn damaged_files_are_errors_not_panics() {
    let good = write(&[("key", keys(2000, 17, 40))]);
    // Both meta pages garbled: what bbolt calls an invalid database.
    let mut b = good.clone();
    b[PAGE_SIZE / 2..PAGE_SIZE / 2 + 8].fill(0);
    b[20] ^= 1;
    b[PAGE_SIZE + 20] ^= 1;
    assert!(matches!(
        BoltReader::open(b.into_boxed_slice()),
        Err(BoltError::Invalid)
    ));
    // One garbled meta page: the other one is used.
    let mut b = good.clone();
    b[20] ^= 1;
    assert_eq!(read_all(b).len(), 1);
    // Truncated.
    let short = good[..good.len() / 2].to_vec();
    let r = BoltReader::open(short.into_boxed_slice()).unwrap();
    assert!(r
        .check_length()
        .unwrap_err()
        .to_string()
        .contains("truncated"));
    // The root bucket's page is the last one written.
    let err = r.buckets().unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    // Every single byte flipped in turn in the data pages: an error or a read, never a panic.
    for at in (3 * PAGE_SIZE..good.len()).step_by(97) {
        let mut b = good.clone();
        b[at] ^= 0xff;
        let r = BoltReader::open(b.into_boxed_slice()).unwrap();
        if let Ok(buckets) = r.buckets() {
            for (_, bucket) in buckets {
                let _ = r.for_each(&bucket, &mut |_: &[u8], _: &[u8], _: bool| {
                    Ok::<_, BoltError>(())
                });
            }
        }
    }
}

#[test]
fn reads_a_snapshot_written_by_etcd() {
    let bytes = include_bytes!("testdata/etcd-3.4.23.db").to_vec();
    // The sha256 etcd appends is not part of the database.
    let db = bytes[..bytes.len() - 32].to_vec();
    let r = BoltReader::open(db.into_boxed_slice()).unwrap();
    r.check_length().unwrap();
    // What etcdctl 3.4.23's `snapshot status -w json` printed for this file:
    // {"hash":3255341517,"revision":307,"totalKey":315,"totalSize":65536}
    assert_eq!(r.size(), 65536);
    let mut hash = 0u32;
    let mut total = 0u64;
    let mut last_key = Vec::new();
    let mut names = Vec::new();
    for (name, b) in r.buckets().unwrap() {
        hash = crc32c::crc32c_append(hash, &name);
        r.for_each(&b, &mut |k: &[u8], v: &[u8], _: bool| {
            hash = crc32c::crc32c_append(hash, k);
            hash = crc32c::crc32c_append(hash, v);
            total += 1;
            if name == b"key" {
                last_key = k.to_vec();
            }
            Ok::<_, BoltError>(())
        })
        .unwrap();
        names.push(String::from_utf8(name).unwrap());
    }
    assert_eq!(hash, 3_255_341_517);
    assert_eq!(total, 315);
    assert_eq!(i64::from_be_bytes(last_key[..8].try_into().unwrap()), 307);
    assert_eq!(
        names,
        [
            "alarm",
            "auth",
            "authRoles",
            "authUsers",
            "cluster",
            "key",
            "lease",
            "members",
            "members_removed",
            "meta"
        ]
    );
}
