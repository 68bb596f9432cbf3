//! The `train` example as a user runs it: killed with SIGKILL at random moments it resumes to the
//! uninterrupted run's result, and bad input ends it with one line of error, leaving every file
//! as it was.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use texprune::burn::module::Module;
use texprune::burn::optim::{SgdConfig, momentum::MomentumConfig};
use texprune::burn::tensor::{Device, Distribution, Tensor};
use texprune::checkpoint;
use texprune::data::SplitMix64;
use texprune::output_lock::{LOCK_FILE, OutputLock};
use texprune::zoo::vgg::VggConfig;

/// The `train` example, built by `cargo test` next to this test's binary.
fn train_example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir.join("examples").join("train");
    assert!(path.exists(), "{} not built", path.display());
    path
}

/// A scratch folder holding the repository's Fashion-MNIST test split under both split names.
fn scratch(name: &str) -> (PathBuf, PathBuf) {
    let root = std::env::temp_dir().join(format!("texprune-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist");
    for kind in ["images-idx3", "labels-idx1"] {
        for split in ["train", "t10k"] {
            std::fs::copy(
                shipped.join(format!("t10k-{kind}-ubyte.gz")),
                data.join(format!("{split}-{kind}-ubyte.gz")),
            )
            .unwrap();
        }
    }
    (root, data)
}

/// A small VGG on 640 images, 10 steps an epoch (the threshold is given by each run).
const RUN: &str = "--dataset fashion-mnist --model small --limit-train 640 --limit-test 200 \
                   --l1 0.1 --lr 0.05 --seed 5";

fn train(args: &[&str], out: &Path, data: &Path) -> Command {
    let mut command = Command::new(train_example());
    command
        .args(RUN.split_whitespace())
        .args(args)
        .arg("--out")
        .arg(out)
        .arg("--data-dir")
        .arg(data);
    command
}

fn run(args: &[&str], out: &Path, data: &Path) -> Output {
    train(args, out, data).output().unwrap()
}

/// Every file under `dir` with its bytes, but the output lock's file: each run that takes the
/// lock writes its own process id there (a refused run that never got the lock writes nothing,
/// which `a_second_run_on_a_folder_in_use_is_refused_and_changes_nothing` checks).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name() == Some(LOCK_FILE.as_ref()) {
            continue;
        }
        if path.is_dir() {
            files.extend(snapshot(&path));
        } else {
            files.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    files
}

/// Loads the checkpoint the way `train --resume` does: model, optimizer, pruner.
fn load_checkpoint(path: &Path) {
    let ck = checkpoint::load::<serde_json::Value>(path).unwrap();
    let model = ck
        .model(
            VggConfig::small()
                .init(&Device::default().autodiff())
                .unwrap(),
        )
        .unwrap();
    ck.pruner(&model).unwrap();
    let momentum = MomentumConfig::new().with_momentum(0.9).with_dampening(0.0);
    ck.optimizer(SgdConfig::new().with_momentum(Some(momentum)).init())
        .unwrap();
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap()
}

/// The run in `b` ended where the uninterrupted run in `a` ended: same masks, same report, the
/// same trained model bit for bit.
fn assert_same_result(a: &Path, b: &Path) {
    assert_eq!(read(a, "structure.json"), read(b, "structure.json"));
    let report = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&read(dir, "report.json")).unwrap()
    };
    for key in [
        "accuracy_masked",
        "accuracy_compact",
        "params_compact",
        "flops_compact",
    ] {
        assert_eq!(report(a)[key], report(b)[key], "{key}");
    }
    let device = Device::default();
    let load = |dir: &Path| {
        VggConfig::small()
            .init(&device)
            .unwrap()
            .load_file(dir.join("masked.bpk"))
    };
    let x = Tensor::<4>::random([4, 1, 28, 28], Distribution::Default, &device);
    assert_eq!(
        load(a).forward(x.clone()).into_data(),
        load(b).forward(x).into_data()
    );
}

/// Twenty SIGKILLs at random moments (start-up, training steps, checkpoint writes, evaluation),
/// each run resuming from the checkpoint the previous one left (the killed run's output lock is
/// gone with it): every surviving checkpoint loads, and a chain of killed runs that finally completes ends exactly where an uninterrupted
/// run ends. Should a chain complete before the twentieth kill (a machine faster than the one
/// that timed the uninterrupted run), it is compared and a new chain starts.
#[test]
fn killed_twenty_times_the_recipe_resumes_to_the_same_result() {
    let (root, data) = scratch("kill");
    let args = [
        "--epochs",
        "10",
        "--threshold",
        "0.02",
        "--checkpoint-every",
        "1",
    ];
    let a = root.join("a");
    let straight = Instant::now();
    assert!(run(&args, &a, &data).status.success());
    let straight = straight.elapsed();

    let mut rng = SplitMix64(20);
    let (mut kills, mut chain, mut torn) = (0, 0, 0);
    let mut b = root.join("b0");
    while kills < 20 {
        let mut command = train(&args, &b, &data);
        if b.join("last.ckpt").exists() {
            command.arg("--resume");
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Between 30 % and 100 % of a twentieth of the uninterrupted run: twenty runs together
        // last at most as long as that run, and each spends part of it starting up.
        let window = straight.as_secs_f64() / 20.0;
        let delay = window * (0.3 + 0.7 * rng.below(1000) as f64 / 1000.0);
        std::thread::sleep(Duration::from_secs_f64(delay));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        if status.success() {
            // The chain completed before this kill.
            assert_same_result(&a, &b);
            chain += 1;
            b = root.join(format!("b{chain}"));
            continue;
        }
        assert_eq!(status.signal(), Some(9), "{status}");
        kills += 1;
        let last = b.join("last.ckpt");
        if last.exists() {
            load_checkpoint(&last);
        }
        torn = std::fs::read_dir(&b)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("tmp".as_ref()))
            .count();
    }
    let last = b.join("last.ckpt");
    let steps = if last.exists() {
        let meta = checkpoint::load::<serde_json::Value>(&last).unwrap().meta;
        meta["steps"].as_u64().unwrap()
    } else {
        0
    };
    eprintln!(
        "{kills} kills survived; {chain} chains completed before the last kill; {steps} of 100 \
         steps done in the last chain when the last kill landed; {torn} kills of that chain \
         landed during a checkpoint write (their temporary files are left, unread); the \
         uninterrupted run took {:.1} s",
        straight.as_secs_f64()
    );
    let resume: &[&str] = if b.join("last.ckpt").exists() {
        &["--resume"]
    } else {
        &[]
    };
    assert!(
        run(&[&args[..], resume].concat(), &b, &data)
            .status
            .success()
    );
    assert_same_result(&a, &b);
    std::fs::remove_dir_all(&root).unwrap();
}

/// Fails with status 1, one line on standard error, no panic, and no file changed.
fn assert_refused(output: &Output, expect: &str, before: &BTreeMap<PathBuf, Vec<u8>>, out: &Path) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(
        lines[0].contains(expect),
        "expected `{expect}` in: {stderr}"
    );
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
    assert!(
        *before == snapshot(out),
        "files changed under {}",
        out.display()
    );
}

#[test]
fn bad_input_ends_with_one_line_of_error_and_changes_nothing() {
    let (root, data) = scratch("bad");
    let out = root.join("run");
    let args = ["--epochs", "1", "--threshold", "0.02"];
    let with = |more: &[&'static str]| [&args[..], more].concat();
    assert!(run(&args, &out, &data).status.success());
    let before = snapshot(&out);
    let last = out.join("last.ckpt");

    // A negative threshold, fresh or resumed.
    for resume in [&[][..], &["--resume"]] {
        let negative = run(
            &[&["--epochs", "1", "--threshold=-0.5"], resume].concat(),
            &out,
            &data,
        );
        assert_refused(&negative, "threshold", &before, &out);
    }
    // A budget that cannot be met.
    let whole = run(&with(&["--target", "1.0"]), &out, &data);
    assert_refused(&whole, "fraction in (0, 1)", &before, &out);

    // A checkpoint of another model, or of another configuration.
    let other = run(&with(&["--model", "resnet20", "--resume"]), &out, &data);
    assert_refused(&other, "--model", &before, &out);
    let other = run(&with(&["--l1", "0.2", "--resume"]), &out, &data);
    assert_refused(&other, "--l1", &before, &out);

    // PyTorch weights of another model: the first key the model lacks, named.
    let weights =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/torch/resnet20_reference.pth");
    let init = [
        "--epochs",
        "1",
        "--threshold",
        "0.02",
        "--init-from",
        weights.to_str().unwrap(),
    ];
    let misfit = run(&init, &out, &data);
    assert_refused(&misfit, "`classifier.bias` is missing", &before, &out);

    // A truncated checkpoint.
    let bytes = std::fs::read(&last).unwrap();
    std::fs::write(&last, &bytes[..bytes.len() / 2]).unwrap();
    let damaged = snapshot(&out);
    let truncated = run(&with(&["--resume"]), &out, &data);
    assert_refused(&truncated, "last.ckpt", &damaged, &out);
    std::fs::write(&last, &bytes).unwrap();

    // A dataset file with a wrong header (a PNG where the IDX images should be).
    let images = data.join("train-images-idx3-ubyte.gz");
    let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/foolbox/mnist_00_7.png");
    std::fs::copy(png, &images).unwrap();
    let header = run(&args, &out, &data);
    assert_refused(&header, "bad magic", &before, &out);
    std::fs::remove_dir_all(&root).unwrap();
}

/// One run per output folder: a second `train` on a folder another process holds ends at once
/// with one line naming the folder and the holder, and changes nothing (the lock file included);
/// the first run is not disturbed and completes.
#[test]
fn a_second_run_on_a_folder_in_use_is_refused_and_changes_nothing() {
    let (root, data) = scratch("lock");
    let out = root.join("run");
    let args = ["--epochs", "1", "--threshold", "0.02"];
    assert!(run(&args, &out, &data).status.success());

    // Held by this test's process: the refused run leaves every byte as it was.
    let held = OutputLock::acquire(&out).unwrap();
    let before = snapshot(&out);
    let lock = std::fs::read(out.join(LOCK_FILE)).unwrap();
    for resume in [&[][..], &["--resume"]] {
        let second = run(&[&args[..], resume].concat(), &out, &data);
        let expect = format!("{}: in use by pid {}", out.display(), std::process::id());
        assert_refused(&second, &expect, &before, &out);
        assert_eq!(std::fs::read(out.join(LOCK_FILE)).unwrap(), lock);
    }
    drop(held);

    // Two `train` processes at once: the second is refused while the first runs, which then
    // completes as usual.
    let long = ["--epochs", "20", "--threshold", "0.02"];
    let mut first = train(&long, &out, &data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let holder = format!("pid {} (train)", first.id());
    let waited = Instant::now();
    while std::fs::read_to_string(out.join(LOCK_FILE))
        .unwrap_or_default()
        .trim()
        != holder
    {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the first run never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = run(&args, &out, &data);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{}: in use by {holder}", out.display())),
        "{stderr}"
    );
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run ended before the second was refused: lengthen it"
    );
    assert!(first.wait().unwrap().success());
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn pytorch_weights_start_a_run_and_the_compact_model_is_written_for_pytorch() {
    let (root, data) = scratch("init");
    let out = root.join("run");
    let weights =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/torch/resnet20_reference.pth");
    let output = run(
        &[
            "--model",
            "resnet20",
            "--cifar-shape",
            "--init-from",
            weights.to_str().unwrap(),
            "--epochs",
            "1",
            "--limit-train",
            "128",
            "--limit-test",
            "64",
            "--export-onnx",
            out.join("compact.onnx").to_str().unwrap(),
        ],
        &out,
        &data,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("3×32×32"), "{stdout}");
    assert!(
        stdout.contains("initialised from") && stdout.contains("128 tensors"),
        "{stdout}"
    );
    let layout: serde_json::Value = serde_json::from_str(&read(&out, "compact.json")).unwrap();
    assert_eq!(layout["architecture"]["kind"], "resnet");
    assert_eq!(layout["convs"].as_array().unwrap().len(), 21);
    let probe = std::fs::read(out.join("probe.safetensors")).unwrap();
    let probe = safetensors::SafeTensors::deserialize(&probe).unwrap();
    assert_eq!(probe.tensor("logits").unwrap().shape(), [8, 10]);
    assert_eq!(probe.tensor("input").unwrap().shape(), [8, 3, 32, 32]);
    let weights = std::fs::read(out.join("compact.safetensors")).unwrap();
    let weights = safetensors::SafeTensors::deserialize(&weights).unwrap();
    assert!(weights.tensor("layer3.2.conv2.FilterSkeleton").is_ok());
    // The ONNX file of the compact model gives the probe's logits in tract.
    let floats = |name: &str| -> Vec<f32> {
        let view = probe.tensor(name).unwrap();
        view.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let (input, expected) = (floats("input"), floats("logits"));
    use tract_onnx::prelude::{Framework, InferenceModelExt, IntoTensor, tvec};
    let model = tract_onnx::onnx()
        .model_for_path(out.join("compact.onnx"))
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input = tract_onnx::prelude::tract_ndarray::Array4::from_shape_vec([8, 3, 32, 32], input)
        .unwrap()
        .into_tensor();
    let outputs = model.run(tvec!(input.into())).unwrap();
    let logits = outputs[0].to_array_view::<f32>().unwrap();
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    let deviation = logits
        .iter()
        .zip(&expected)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(deviation <= 1e-4 * scale, "{deviation} of {scale}");
    std::fs::remove_dir_all(&root).unwrap();
}
