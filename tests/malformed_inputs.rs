//! The file readers against damaged and malicious input, a proptest-driven corpus: valid files
//! (built from the repository's real images) mutated by bit flips, overwritten bytes, big-endian
//! and little-endian integers written over headers, truncations, insertions and splices. Every
//! reader must return `Ok` or a typed error, never panic, and never make one allocation larger
//! than [`ALLOCATION_LIMIT`] (a header that declares gigabytes must not be believed).
//!
//! The PyTorch and safetensors readers are seeded with files PyTorch wrote
//! (`tests/data/torch/vgg_small_reference.*`).
//!
//! Run with `--nocapture` to see how many inputs each reader took and how long.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use texprune::burn::optim::SgdConfig;
use texprune::burn::tensor::Device;
use texprune::checkpoint;
use texprune::data::{ImageFolder, Split, cifar10, load_image, mnist, read_idx};
use texprune::zoo::vgg::{Vgg, VggConfig, VggLayer};
use texprune::{CdpConfig, DtcConfig, Pruner, PrunerConfig, pytorch};

/// The largest single allocation a reader may make on these (≤ 100 kB) inputs.
const ALLOCATION_LIMIT: usize = 64 << 20;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, recording the largest request made on each thread.
struct Recording;

unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(new_size)));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Recording = Recording;

/// Runs `read` and returns the largest allocation it made on this thread.
fn largest_allocation(read: impl FnOnce()) -> usize {
    LARGEST.with(|l| l.set(0));
    read();
    LARGEST.with(|l| l.get())
}

/// One change to a file.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(prop::sample::Index, u8),
    SetByte(prop::sample::Index, u8),
    /// A 32-bit big-endian integer (IDX sizes), often huge.
    SetU32Be(prop::sample::Index, u32),
    /// A 64-bit little-endian integer (checkpoint lengths), often huge.
    SetU64Le(prop::sample::Index, u64),
    Truncate(prop::sample::Index),
    Insert(prop::sample::Index, Vec<u8>),
    /// Copies a stretch of the file over another place.
    Splice(prop::sample::Index, prop::sample::Index, usize),
}

fn big_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u32::MAX),
        Just(1 << 31),
        0u32..100_000,
        any::<u32>()
    ]
}

fn big_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(u64::MAX),
        Just(1 << 40),
        0u64..10_000,
        any::<u64>()
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    use prop::sample::Index;
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        2 => (any::<Index>(), big_u32()).prop_map(|(i, v)| Mutation::SetU32Be(i, v)),
        2 => (any::<Index>(), big_u64()).prop_map(|(i, v)| Mutation::SetU64Le(i, v)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), any::<Index>(), 1usize..256)
            .prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
    ]
}

/// Applies `mutations`; header positions (the first 32 bytes) are hit half of the time.
fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        let len = bytes.len();
        let at = |i: &prop::sample::Index| {
            let j = i.index(2 * len);
            if j < len { j } else { (j - len) % len.min(32) }
        };
        match m {
            Mutation::FlipBit(i, b) => {
                let j = at(i);
                bytes[j] ^= 1 << b;
            }
            Mutation::SetByte(i, v) => {
                let j = at(i);
                bytes[j] = *v;
            }
            Mutation::SetU32Be(i, v) => {
                let j = at(i).min(len.saturating_sub(4));
                let n = (len - j).min(4);
                bytes[j..j + n].copy_from_slice(&v.to_be_bytes()[..n]);
            }
            Mutation::SetU64Le(i, v) => {
                let j = at(i).min(len.saturating_sub(8));
                let n = (len - j).min(8);
                bytes[j..j + n].copy_from_slice(&v.to_le_bytes()[..n]);
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(len)),
            Mutation::Insert(i, b) => {
                let j = at(i);
                bytes.splice(j..j, b.iter().copied());
            }
            Mutation::Splice(a, b, n) => {
                let (from, to) = (a.index(len), b.index(len));
                let n = (*n).min(len - from).min(len - to);
                let stretch = bytes[from..from + n].to_vec();
                bytes[to..to + n].copy_from_slice(&stretch);
            }
        }
    }
    bytes
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("texprune-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The repository's real images of one kind (`mnist`, `cifar10`), decoded to `[C, H, W]`
/// bytes, with the label their file name carries.
fn real_images(kind: &str, size: u32) -> Vec<(Vec<u8>, u8)> {
    let dir = repo().join("tests/data/foolbox");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{kind}_")) && n.ends_with(".png"))
        .collect();
    files.sort();
    files
        .iter()
        .take(4)
        .map(|name| {
            let label = name.trim_end_matches(".png").rsplit('_').next().unwrap();
            let pixels = load_image(&dir.join(name), size, size).unwrap();
            (pixels, label.parse().unwrap())
        })
        .collect()
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Runs `cases` mutated copies of the seeds through `read` (which writes the bytes where its
/// reader looks and reads them back); returns how many inputs were read.
fn fuzz(name: &str, seeds: &[Vec<u8>], cases: u32, read: impl Fn(&[u8])) {
    let start = Instant::now();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (0..seeds.len(), prop::collection::vec(mutation(), 0..6));
    runner
        .run(&strategy, |(seed, mutations)| {
            let bytes = mutate(seeds[seed].clone(), &mutations);
            let largest = largest_allocation(|| read(&bytes));
            prop_assert!(
                largest <= ALLOCATION_LIMIT,
                "{name}: one allocation of {largest} bytes for a {}-byte input",
                bytes.len()
            );
            Ok(())
        })
        .unwrap();
    eprintln!(
        "{name}: {cases} mutated inputs in {:.1} s, no panic, largest allowed allocation {} MiB",
        start.elapsed().as_secs_f64(),
        ALLOCATION_LIMIT >> 20
    );
}

#[test]
fn idx_reader() {
    // The recorder sees allocations.
    assert!(largest_allocation(|| drop(vec![0u8; 100 << 20])) >= 100 << 20);
    let images = real_images("mnist", 28);
    let pixels: Vec<u8> = images
        .iter()
        .flat_map(|(p, _)| p[..28 * 28].to_vec())
        .collect();
    let labels: Vec<u8> = images.iter().map(|(_, l)| *l).collect();
    let n = images.len() as u32;
    let (img, lab) = (idx(&[n, 28, 28], &pixels), idx(&[n], &labels));
    let seeds = vec![img.clone(), gzip(&img), lab.clone(), gzip(&lab)];
    let dir = scratch("idx");
    // Sanity: the seeds read back.
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), &img).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), &lab).unwrap();
    assert_eq!(mnist(&dir, Split::Test).unwrap().labels.len(), n as usize);
    let file = dir.join("x.idx");
    fuzz("IDX (plain and gzip)", &seeds, 5000, |bytes| {
        std::fs::write(&file, bytes).unwrap();
        let _ = read_idx(&file);
    });
    // Mutated images beside valid labels: the MNIST loader's own checks.
    let images_file = dir.join("t10k-images-idx3-ubyte");
    fuzz("MNIST images", &[img, gzip(&pixels)], 1000, |bytes| {
        std::fs::write(&images_file, bytes).unwrap();
        let _ = mnist(&dir, Split::Test);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cifar_reader() {
    let records: Vec<u8> = real_images("cifar10", 32)
        .into_iter()
        .flat_map(|(p, l)| std::iter::once(l).chain(p))
        .collect();
    let dir = scratch("cifar");
    let file = dir.join("test_batch.bin");
    std::fs::write(&file, &records).unwrap();
    assert_eq!(cifar10(&dir, Split::Test).unwrap().labels.len(), 4);
    fuzz("CIFAR-10 binary", &[records], 2000, |bytes| {
        std::fs::write(&file, bytes).unwrap();
        let _ = cifar10(&dir, Split::Test);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn image_decoder() {
    let src = repo().join("tests/data/foolbox");
    let seeds: Vec<Vec<u8>> = ["cifar10_00_3.png", "mnist_00_7.png", "imagenet_00_243.jpg"]
        .iter()
        .map(|f| std::fs::read(src.join(f)).unwrap())
        .collect();
    let dir = scratch("image");
    let class = dir.join("n01");
    std::fs::create_dir_all(&class).unwrap();
    // The extension does not decide the decoder: a PNG named .jpg is still read.
    let file = class.join("x.jpg");
    fuzz("PNG/JPEG images", &seeds, 1000, |bytes| {
        std::fs::write(&file, bytes).unwrap();
        let folder = ImageFolder::new(&dir, 40, 32).unwrap();
        let _ = texprune::burn::data::dataset::Dataset::get(&folder, 0);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A JPEG cut at 7,142 bytes with byte 159 set to 171 (a case the fuzzer above found) declares
/// a 67 MB image: refused by the decoder's limit, never allocated.
#[test]
fn a_jpeg_whose_header_declares_a_huge_image_is_refused_before_it_is_allocated() {
    let mut bytes = std::fs::read(repo().join("tests/data/foolbox/imagenet_00_243.jpg")).unwrap();
    bytes.truncate(7142);
    bytes[159] = 171;
    let dir = scratch("huge-jpeg");
    let class = dir.join("n01");
    std::fs::create_dir_all(&class).unwrap();
    std::fs::write(class.join("x.jpg"), &bytes).unwrap();
    let folder = ImageFolder::new(&dir, 40, 32).unwrap();
    let mut result = None;
    let largest = largest_allocation(|| {
        result = Some(texprune::burn::data::dataset::Dataset::get(&folder, 0));
    });
    assert!(
        largest <= ALLOCATION_LIMIT,
        "one allocation of {largest} bytes"
    );
    assert!(result.unwrap().is_err());
    let error = texprune::data::load_image(&class.join("x.jpg"), 40, 32).unwrap_err();
    assert!(error.to_string().contains("limit"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn small_vgg() -> Vgg {
    VggConfig::new(vec![
        VggLayer::Conv(4),
        VggLayer::MaxPool,
        VggLayer::Conv(6),
    ])
    .with_input_size([8, 8])
    .init(&Device::default().autodiff())
    .unwrap()
}

#[test]
fn checkpoint_reader() {
    let dir = scratch("ckpt");
    let path = dir.join("last.ckpt");
    let model = small_vgg();
    let pruner = Pruner::new(PrunerConfig::new(
        CdpConfig::new().with_adaptive(1e-3),
        DtcConfig::new(),
    ))
    .unwrap();
    let optim = SgdConfig::new().init();
    checkpoint::save(&path, &(3u32, "meta".to_string()), &model, &optim, &pruner).unwrap();
    let seed = std::fs::read(&path).unwrap();
    let file = dir.join("fuzzed.ckpt");
    // Every input that differs from the seed must be refused; the others load whole.
    let (unchanged, loaded) = (Cell::new(0), Cell::new(0));
    let read = |bytes: &[u8]| {
        std::fs::write(&file, bytes).unwrap();
        unchanged.set(unchanged.get() + usize::from(bytes == seed.as_slice()));
        if let Ok(ck) = checkpoint::load::<(u32, String)>(&file) {
            let model = ck.model(small_vgg());
            let optimizer = ck.optimizer(SgdConfig::new().init());
            if let Ok(m) = model
                && ck.pruner(&m).is_ok()
                && optimizer.is_ok()
            {
                loaded.set(loaded.get() + 1);
            }
        }
    };
    fuzz(
        "checkpoints, anywhere",
        std::slice::from_ref(&seed),
        1000,
        read,
    );
    assert_eq!(loaded.get(), unchanged.get());
    // Mutations confined to the Burn records (the header stays valid and the lengths agree).
    let header = 16 + u64::from_le_bytes(seed[8..16].try_into().unwrap()) as usize;
    let records = seed[header..].to_vec();
    unchanged.set(0);
    loaded.set(0);
    fuzz(
        "checkpoints, records only",
        std::slice::from_ref(&records),
        1000,
        |mutated| {
            let mut body = mutated.to_vec();
            body.resize(records.len(), 0);
            read(&[&seed[..header], &body].concat());
        },
    );
    assert_eq!(loaded.get(), unchanged.get());
    // And with the checksum recomputed, so that the damage reaches Burn's record decoders.
    let records = &records[..records.len() - 8];
    let decoded = Cell::new(0);
    fuzz(
        "checkpoints, records, checksum recomputed",
        &[records.to_vec()],
        1000,
        |mutated| {
            let mut body = mutated.to_vec();
            body.resize(records.len(), 0);
            let content = [&seed[..header], &body].concat();
            let hash = content.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            std::fs::write(&file, [&content[..], &hash.to_le_bytes()].concat()).unwrap();
            let ck = checkpoint::load::<(u32, String)>(&file).unwrap();
            if let Ok(m) = ck.model(small_vgg()) {
                decoded.set(decoded.get() + 1);
                let _ = ck.pruner(&m);
            }
            let _ = ck.optimizer(SgdConfig::new().init());
        },
    );
    eprintln!("  {} of those decoded into the model", decoded.get());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pytorch_and_safetensors_readers() {
    let vgg = || {
        VggConfig::new(vec![
            VggLayer::Conv(4),
            VggLayer::MaxPool,
            VggLayer::Conv(6),
            VggLayer::MaxPool,
        ])
        .init(&Device::default())
        .unwrap()
    };
    let dir = scratch("torch");
    for ext in ["pth", "safetensors"] {
        let seed =
            std::fs::read(repo().join(format!("tests/data/torch/vgg_small_reference.{ext}")))
                .unwrap();
        let file = dir.join(format!("weights.{ext}"));
        // Sanity: the seed loads.
        std::fs::write(&file, &seed).unwrap();
        pytorch::load(vgg(), &file).unwrap();
        let loaded = Cell::new(0);
        fuzz(&format!("{ext} weights"), &[seed], 1000, |bytes| {
            std::fs::write(&file, bytes).unwrap();
            loaded.set(loaded.get() + usize::from(pytorch::load(vgg(), &file).is_ok()));
        });
        eprintln!("  {} of those loaded into the model", loaded.get());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
