//! The loaders on real images (foolbox's CIFAR, MNIST and ImageNet samples, the Fashion-MNIST
//! test split the repository ships) written into the real formats, and on corrupted files.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::data::dataset::Dataset;
use burn::tensor::Device;
use texprune_data::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn foolbox(prefix: &str) -> Vec<(Vec<u8>, usize)> {
    let dir = repo().join("tests/data/foolbox");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&format!("{prefix}_")) && name.ends_with(".png")
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let label = stem.rsplit('_').next().unwrap().parse().unwrap();
            let img = image::open(p).unwrap();
            let pixels = if img.color().channel_count() == 1 {
                img.to_luma8().into_raw()
            } else {
                // HWC → CHW.
                let rgb = img.to_rgb8();
                let plane = (rgb.width() * rgb.height()) as usize;
                let mut chw = vec![0; 3 * plane];
                for (i, px) in rgb.pixels().enumerate() {
                    for c in 0..3 {
                        chw[c * plane + i] = px[c];
                    }
                }
                chw
            };
            (pixels, label)
        })
        .collect()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("texprune-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn cifar_records(images: &[(Vec<u8>, usize)], labels: impl Fn(usize) -> Vec<u8>) -> Vec<u8> {
    images
        .iter()
        .flat_map(|(pixels, label)| labels(*label).into_iter().chain(pixels.iter().copied()))
        .collect()
}

#[test]
fn cifar10_binary_round_trip_of_real_images() {
    let images = foolbox("cifar10");
    assert_eq!(images.len(), 20);
    let dir = temp_dir("cifar10");
    // Four images per training batch file, all twenty in the test file.
    for (i, chunk) in images.chunks(4).enumerate() {
        let bytes = cifar_records(chunk, |l| vec![l as u8]);
        std::fs::write(dir.join(format!("data_batch_{}.bin", i + 1)), bytes).unwrap();
    }
    std::fs::write(
        dir.join("test_batch.bin"),
        cifar_records(&images, |l| vec![l as u8]),
    )
    .unwrap();
    for split in [Split::Train, Split::Test] {
        let set = cifar10(&dir, split).unwrap();
        assert_eq!((set.len(), set.shape, set.classes), (20, [3, 32, 32], 10));
        for (i, (pixels, label)) in images.iter().enumerate() {
            let item = set.get(i).unwrap();
            assert_eq!((&item.pixels, item.label), (pixels, *label));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cifar100_reads_fine_and_coarse_bytes() {
    let images = foolbox("cifar100");
    assert_eq!(images.len(), 20);
    let dir = temp_dir("cifar100");
    // The coarse byte is set to fine / 5 here, only to tell the two label bytes apart.
    let bytes = cifar_records(&images, |l| vec![(l / 5) as u8, l as u8]);
    std::fs::write(dir.join("test.bin"), bytes).unwrap();
    let fine = cifar100(&dir, Split::Test, Cifar100Labels::Fine).unwrap();
    let coarse = cifar100(&dir, Split::Test, Cifar100Labels::Coarse).unwrap();
    assert_eq!((fine.classes, coarse.classes), (100, 20));
    for (i, (pixels, label)) in images.iter().enumerate() {
        assert_eq!(fine.labels[i], *label);
        assert_eq!(coarse.labels[i], label / 5);
        assert_eq!(&fine.get(i).unwrap().pixels, pixels);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn idx_round_trip_of_real_mnist_images_plain_and_gzip() {
    let images = foolbox("mnist");
    assert_eq!(images.len(), 20);
    let pixels: Vec<u8> = images.iter().flat_map(|(p, _)| p.clone()).collect();
    let labels: Vec<u8> = images.iter().map(|(_, l)| *l as u8).collect();
    let dir = temp_dir("mnist");
    let img = idx_bytes(&[20, 28, 28], &pixels);
    let lab = idx_bytes(&[20], &labels);
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), &img).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), &lab).unwrap();
    std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gzip(&img)).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), gzip(&lab)).unwrap();
    for split in [Split::Test, Split::Train] {
        let set = mnist(&dir, split).unwrap();
        assert_eq!((set.len(), set.shape), (20, [1, 28, 28]));
        assert_eq!(set.pixels, pixels);
        assert_eq!(
            set.labels,
            labels.iter().map(|&l| usize::from(l)).collect::<Vec<_>>()
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_shipped_fashion_mnist_test_split() {
    let set = mnist(&repo().join("data/fashion-mnist"), Split::Test).unwrap();
    assert_eq!(
        (set.len(), set.shape, set.classes),
        (10_000, [1, 28, 28], 10)
    );
    for class in 0..10 {
        assert_eq!(set.labels.iter().filter(|&&l| l == class).count(), 1000);
    }
    let (train, held) = set.split(0.2, 1);
    assert_eq!((train.len(), held.len()), (8000, 2000));
    let again = set.split(0.2, 1).1;
    assert_eq!(held, again);
}

/// Writes `bytes` to `name` in a fresh folder and returns the error reading it gives.
fn corrupt(name: &str, file: &str, bytes: &[u8], read: impl Fn(&Path) -> DataError) -> String {
    let dir = temp_dir(name);
    std::fs::write(dir.join(file), bytes).unwrap();
    let message = read(&dir).to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        message.contains(file),
        "the error names the file: {message}"
    );
    message
}

#[test]
fn corrupted_files_give_errors_naming_file_and_fault() {
    let cifar = |d: &Path| cifar10(d, Split::Test).unwrap_err();
    let truncated = corrupt("trunc", "test_batch.bin", &vec![0u8; 3073 * 2 - 100], cifar);
    assert!(truncated.contains("multiple of 3073"), "{truncated}");
    let mut record = vec![12u8];
    record.extend(vec![0u8; 3072]);
    let label = corrupt("label", "test_batch.bin", &record, cifar);
    assert!(
        label.contains("label 12") && label.contains("10 classes"),
        "{label}"
    );
    let missing = cifar10(Path::new("/nonexistent/cifar"), Split::Test).unwrap_err();
    assert!(matches!(missing, DataError::Io { .. }), "{missing}");

    let idx = |d: &Path| read_idx(&d.join("x.idx")).unwrap_err();
    let magic = corrupt("magic", "x.idx", b"\x89PNG\r\n\x1a\n", idx);
    assert!(magic.contains("bad magic"), "{magic}");
    let short = corrupt("short", "x.idx", &idx_bytes(&[3, 28, 28], &[0; 100]), idx);
    assert!(short.contains("expected 2368"), "{short}");
    let gz = gzip(&idx_bytes(&[2], &[1, 2]));
    let gz_cut = corrupt("gzcut", "x.idx", &gz[..gz.len() - 6], idx);
    assert!(!gz_cut.is_empty());
    let dir = temp_dir("mismatch");
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        idx_bytes(&[2, 1, 1], &[0, 0]),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        idx_bytes(&[3], &[0, 0, 0]),
    )
    .unwrap();
    let err = mnist(&dir, Split::Test).unwrap_err().to_string();
    assert!(err.contains("labels for 2 images"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn image_folder_of_real_jpegs_and_a_broken_one() {
    let root = temp_dir("folder");
    let src = repo().join("tests/data/foolbox");
    for (class, files) in [
        ("n01", ["imagenet_00_243.jpg", "imagenet_01_559.jpg"]),
        ("n02", ["imagenet_02_438.jpg", "imagenet_03_990.jpg"]),
    ] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for f in files {
            std::fs::copy(src.join(f), root.join(class).join(f)).unwrap();
        }
    }
    std::fs::copy(src.join("cifar10_00_3.png"), root.join("n02/small.png")).unwrap();
    std::fs::write(
        root.join("n02/zz_broken.jpg"),
        b"\xff\xd8\xff\xe0 not a jpeg",
    )
    .unwrap();
    let set = ImageFolder::new(&root, 72, 64).unwrap();
    assert_eq!(set.classes, ["n01", "n02"]);
    assert_eq!(set.len(), 6);
    let labels: Vec<usize> = set.items.iter().map(|(_, l)| *l).collect();
    assert_eq!(labels, [0, 0, 1, 1, 1, 1]);
    for i in 0..5 {
        let item = set.get(i).unwrap();
        assert_eq!(item.shape, [3, 64, 64]);
        assert_eq!(item.pixels.len(), 3 * 64 * 64);
        // A real photo is not flat.
        let (lo, hi) = item
            .pixels
            .iter()
            .fold((255, 0), |(lo, hi), &p| (lo.min(p), hi.max(p)));
        assert!(hi - lo > 50);
    }
    let err = set.get(5).unwrap_err().to_string();
    assert!(
        err.contains("zz_broken.jpg") && err.contains("cannot decode"),
        "{err}"
    );
    let empty = temp_dir("empty");
    assert!(matches!(
        ImageFolder::new(&empty, 8, 8),
        Err(DataError::Empty { .. })
    ));
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::remove_dir_all(&empty).unwrap();
}

#[test]
fn batches_are_normalised_and_augmentation_is_a_shifted_crop() {
    let device = Device::default();
    let item = ImageItem {
        pixels: (0..2 * 4 * 4).map(|v| v as u8 * 8).collect(),
        shape: [2, 4, 4],
        label: 3,
    };
    let norm = Normalization {
        mean: vec![0.5, 0.25],
        std: vec![0.5, 0.25],
    };
    let batcher = ImageBatcher::new(norm, None, 0);
    let batch = batcher.images(std::slice::from_ref(&item), &mut SplitMix64(0), &device);
    assert_eq!(batch.images.dims(), [1, 2, 4, 4]);
    let v: Vec<f32> = batch.images.into_data().iter::<f32>().collect();
    assert!((v[0] - (0.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);
    assert!((v[16] - (128.0 / 255.0 - 0.25) / 0.25).abs() < 1e-6);
    assert_eq!(
        batch.labels.into_data().iter::<i64>().collect::<Vec<_>>(),
        [3]
    );

    let aug = Augmentation { pad: 1, flip: true };
    let mut seen_shift = false;
    for seed in 0..20 {
        let out = aug.apply(&item.pixels, item.shape, &mut SplitMix64(seed));
        assert_eq!(out.len(), item.pixels.len());
        // Every output pixel is 0 (padding) or a pixel of the same channel.
        for (i, p) in out.iter().enumerate() {
            let ch = i / 16;
            assert!(*p == 0 || item.pixels[ch * 16..(ch + 1) * 16].contains(p));
        }
        seen_shift |= out != item.pixels;
    }
    assert!(seen_shift);
    assert_eq!(epoch_order(10, 3, 2), epoch_order(10, 3, 2));
    assert_ne!(epoch_order(10, 3, 2), epoch_order(10, 3, 1));
}
