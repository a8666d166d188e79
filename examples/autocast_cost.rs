//! What `#[autocast]` costs at run time: the same small block written with the attribute and by hand with
//! explicit casts, compared by instruction counts (valgrind's callgrind; repeatable on a noisy machine)
//! and by wall-clock medians.
//!
//! ```text
//! cargo run --release --example autocast_cost
//! ```
//!
//! Each variant runs in its own process under callgrind, once with 0 iterations (setup only) and once
//! with N; the difference is the instruction count of N calls. Without valgrind only wall-clock times are
//! shown.

use amp::prelude::*;
use std::process::Command;
use std::time::Instant;

const ITERATIONS: usize = 200;

/// Small tensors, so that any overhead of the dispatch would show next to the kernels.
fn inputs() -> (Tensor<f32>, Param, Param, Tensor<i64>) {
    let mut rng = Rng::new(0);
    let x = Tensor::<f32>::randn([8, 32], &mut rng);
    let w1 = Param::named("w1", Tensor::<f32>::randn([32, 32], &mut rng));
    let w2 = Param::named("w2", Tensor::<f32>::randn([10, 32], &mut rng));
    let y = Tensor::<i64>::from_vec((0..8).map(|i| i % 10).collect(), [8]);
    (x, w1, w2, y)
}

#[autocast(bf16)]
fn with_attribute(x: &Tensor<f32>, w1: &Param, w2: &Param, y: &Tensor<i64>) -> Tensor<f32> {
    let h = x.linear(w1, None).gelu();
    let z = h.linear(w2, None);
    let n = z.layer_norm(&[10], None, None, 1e-5);
    n.cross_entropy(y) + z.softmax(-1).sum(..)
}

fn by_hand(x: &Tensor<f32>, w1: &Param, w2: &Param, y: &Tensor<i64>) -> Tensor<f32> {
    let h = x.to_bf16().linear(&w1.get::<bf16>(), None).gelu();
    let z = h.linear(&w2.get::<bf16>(), None);
    let n = z.to_f32().layer_norm(&[10], None, None, 1e-5);
    n.cross_entropy(y) + z.to_f32().softmax(-1).sum(..)
}

fn run(variant: &str, iterations: usize) -> f32 {
    let (x, w1, w2, y) = inputs();
    let f = if variant == "attribute" {
        with_attribute
    } else {
        by_hand
    };
    let mut total = 0.0;
    for _ in 0..iterations {
        total += f(&x, &w1, &w2, &y).item();
    }
    total
}

/// Instructions executed by `variant` over `iterations` calls, from callgrind's summary line.
fn callgrind(exe: &str, variant: &str, iterations: usize) -> Option<u64> {
    let out = std::env::temp_dir().join(format!("amp-autocast-cost-{variant}-{iterations}.out"));
    let status = Command::new("valgrind")
        .args(["--tool=callgrind", "--quiet"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .args([exe, "run", variant, &iterations.to_string()])
        .env("RAYON_NUM_THREADS", "1")
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let text = std::fs::read_to_string(&out).ok()?;
    let _ = std::fs::remove_file(&out);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })?
        .trim()
        .parse()
        .ok()
}

fn median_seconds(variant: &str) -> f64 {
    let mut times: Vec<f64> = (0..15)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(run(variant, ITERATIONS));
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("run") {
        let (variant, n) = (
            args[2].as_str(),
            args[3].parse().expect("an iteration count"),
        );
        std::hint::black_box(run(variant, n));
        return;
    }
    assert_eq!(
        run("attribute", 3),
        run("by_hand", 3),
        "both variants compute the same values"
    );
    let exe = std::env::current_exe().expect("the path of this program");
    let exe = exe.to_str().expect("a UTF-8 path");
    println!("#[autocast(bf16)] block vs the same block with explicit casts, {ITERATIONS} calls\n");
    println!(
        "{:<12} {:>16} {:>14}",
        "variant", "instructions", "median time"
    );
    let mut counts = Vec::new();
    for variant in ["by_hand", "attribute"] {
        let ir = match (
            callgrind(exe, variant, ITERATIONS),
            callgrind(exe, variant, 0),
        ) {
            (Some(n), Some(zero)) => Some(n - zero),
            _ => None,
        };
        counts.push(ir);
        let shown = ir.map_or("(no valgrind)".to_string(), |ir| ir.to_string());
        println!(
            "{variant:<12} {shown:>16} {:>12.3}ms",
            median_seconds(variant) * 1e3
        );
    }
    if let [Some(hand), Some(attr)] = counts[..] {
        let ratio = attr as f64 / hand as f64;
        println!(
            "\nattribute / by hand: {ratio:.4} ({:+.2}% instructions; target within ±2%)",
            (ratio - 1.0) * 100.0
        );
    }
}
