//! Lazy reads through an outboard (FORMAT.md §14): whatever the changes to
//! the file and to its outboard, a read that succeeds returns exactly the
//! committed bytes.
#![no_main]

use cathedral_bundle::format::outboard::{write, Checked};
use cathedral_bundle::format::ReadAt;
use cathedral_bundle::Digest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<u8>, Vec<(u32, u8)>, Vec<(u32, u8)>, Vec<(u32, u16)>)| {
    let (original, data_flips, outboard_flips, reads) = input;
    let size = original.len() as u64;
    let mut outboard = Vec::new();
    let root = write(&original[..], size, &mut outboard).expect("in memory");
    assert_eq!(root, Digest::of(&original));
    let mut data = original.clone();
    for (at, x) in data_flips {
        if !data.is_empty() {
            let at = at as usize % data.len();
            data[at] ^= x;
        }
    }
    for (at, x) in outboard_flips {
        if !outboard.is_empty() {
            let at = at as usize % outboard.len();
            outboard[at] ^= x;
        }
    }
    let Ok(checked) = Checked::new(data, outboard, root, size, "f", "f.obao") else { return };
    for (at, len) in reads {
        if size == 0 {
            break;
        }
        let at = u64::from(at) % size;
        let len = (u64::from(len)).min(size - at) as usize;
        let mut buf = vec![0; len];
        if checked.read_at(at, &mut buf).is_ok() {
            assert_eq!(buf, original[at as usize..at as usize + len], "a read passed changed bytes");
        }
    }
});
