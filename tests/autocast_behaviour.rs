//! What `#[autocast]` and `#[keep_fp32]` do at run time: for each op class, the output element type and
//! values equal the runtime called with explicit casts; `#[keep_fp32]` regions run in f32; gradients reach
//! the f32 master weights; every form of the attributes works.

use amp::prelude::*;
use std::any::type_name;

fn type_of<T>(_: &T) -> &'static str {
    type_name::<T>()
}

fn inputs() -> (Tensor<f32>, Param, Tensor<i64>) {
    let mut rng = Rng::new(11);
    let x = Tensor::<f32>::randn([5, 7], &mut rng);
    let w = Param::named("w", Tensor::<f32>::randn([3, 7], &mut rng));
    let y = Tensor::<i64>::from_vec(vec![0, 2, 1, 1, 0], [5]);
    (x, w, y)
}

/// Low class: the matmul runs in bf16 on the cached bf16 weight; f32 class: softmax in f32.
#[autocast(bf16)]
fn low_and_f32(x: &Tensor<f32>, w: &Param) -> (Tensor<bf16>, Tensor<f32>) {
    let h = x.linear(w, None);
    let p = h.softmax(-1);
    (h, p)
}

/// Each class inside bf16 matches the runtime with explicit casts, bit for bit.
#[test]
fn classes_match_explicit_casts_under_bf16() {
    let (x, w, _) = inputs();
    let (h, p) = low_and_f32(&x, &w);
    let h_ref = x.to_bf16().linear(&w.get::<bf16>(), None);
    assert_eq!(h.to_vec(), h_ref.to_vec());
    assert_eq!(p.to_vec(), h_ref.to_f32().softmax(-1).to_vec());
}

#[autocast(f16)]
fn every_class_f16(x: &Tensor<f32>, w: &Param, y: &Tensor<i64>) -> Tensor<f32> {
    let h = x.matmul(&w.value().t()); // low: f16
    let a = h.gelu(); // same: stays f16
    let s = a.sum_keepdim(-1); // f32
    let z = &a + &s; // promote: f16 + f32 = f32
    z.cross_entropy(y) // f32
}

/// Under f16 the element type of every intermediate follows the table (checked by the return type and
/// the values against explicit casts).
#[test]
fn classes_match_explicit_casts_under_f16() {
    let (x, w, y) = inputs();
    let got = every_class_f16(&x, &w, &y);
    let h = x.to_f16().matmul(&w.value().t().to_f16());
    let a = h.gelu();
    let s = a.to_f32().sum_keepdim(-1);
    let expected = (&a + &s).cross_entropy(&y);
    assert_eq!(type_of(&got), type_name::<Tensor<f32>>());
    assert_eq!(got.to_vec(), expected.to_vec());
}

#[autocast(bf16)]
fn keep_positions(x: &Tensor<f32>, w: &Param) -> Vec<&'static str> {
    #[keep_fp32]
    let a = x.linear(w, None);
    let b = #[keep_fp32]
    x.matmul(&w.value().t());
    let c = #[keep_fp32]
    {
        let t = x.linear(w, None);
        &t * 2.0
    };
    let f = #[keep_fp32]
    |t: &Tensor<f32>| t.linear(w, None);
    let d = f(x);
    let e = x.linear(w, None);
    vec![
        type_of(&a),
        type_of(&b),
        type_of(&c),
        type_of(&d),
        type_of(&e),
    ]
}

/// `#[keep_fp32]` on a let, an expression, a block and a closure makes their ops run in f32.
#[test]
fn keep_fp32_in_each_position() {
    let (x, w, _) = inputs();
    let types = keep_positions(&x, &w);
    let f32t = type_name::<Tensor<f32>>();
    assert_eq!(types[..4], [f32t, f32t, f32t, f32t]);
    assert_eq!(types[4], type_name::<Tensor<bf16>>());
}

#[keep_fp32]
fn whole_fn_in_f32(x: &Tensor<bf16>) -> &'static str {
    let y = x.relu() * 2.0;
    type_of(&y)
}

/// `#[keep_fp32]` on a fn outside any region runs every op in f32, operators included.
#[test]
fn keep_fp32_fn() {
    let x = Tensor::<bf16>::ones([3]);
    assert_eq!(whole_fn_in_f32(&x), type_name::<Tensor<f32>>());
}

/// A small model written once, generic over the policy.
struct Mlp<P: Policy> {
    w1: Param,
    w2: Param,
    policy: std::marker::PhantomData<P>,
}

#[autocast(P)]
impl<P: Policy> Mlp<P> {
    fn new(rng: &mut Rng) -> Self {
        let w1 = Param::named("w1", Tensor::<f32>::randn([16, 7], rng) * 0.3);
        let w2 = Param::named("w2", Tensor::<f32>::randn([3, 16], rng) * 0.3);
        Mlp {
            w1,
            w2,
            policy: std::marker::PhantomData,
        }
    }

    fn logits(&self, x: &Tensor<f32>) -> Tensor<f32> {
        x.linear(&self.w1, None).relu().linear(&self.w2, None)
    }

    fn loss(&self, x: &Tensor<f32>, y: &Tensor<i64>) -> Tensor<f32> {
        self.logits(x).cross_entropy(y)
    }

    #[keep_fp32]
    fn loss_in_f32(&self, x: &Tensor<f32>, y: &Tensor<i64>) -> Tensor<f32> {
        x.linear(&self.w1, None)
            .relu()
            .linear(&self.w2, None)
            .cross_entropy(y)
    }
}

/// The same model runs under bf16, f16 and f32; its loss is close across policies, gradients reach the
/// f32 masters, and #[keep_fp32] inside the impl gives the f32 result exactly.
#[test]
fn one_model_every_policy() {
    let (x, _, y) = inputs();
    fn run<P: Policy>(x: &Tensor<f32>, y: &Tensor<i64>) -> (f32, f32, Tensor<f32>, f32) {
        let model = Mlp::<P>::new(&mut Rng::new(1));
        let loss = model.loss(x, y);
        let grads = loss.backward();
        let g = grads.get(&model.w1).expect("w1 gets a gradient");
        (
            loss.item(),
            model.loss_in_f32(x, y).item(),
            g,
            Mlp::<amp::policy::F32>::new(&mut Rng::new(1))
                .loss(x, y)
                .item(),
        )
    }
    let (l32, keep32, g32, _) = run::<amp::policy::F32>(&x, &y);
    assert_eq!(l32, keep32);
    for (lo, tol) in [
        (run::<amp::policy::Bf16>(&x, &y), 0.02),
        (run::<amp::policy::F16>(&x, &y), 0.003),
    ] {
        let (l, keep, g, reference) = lo;
        assert_eq!(keep, reference, "keep_fp32 ignores the caller's policy");
        assert!((l - l32).abs() / l32 < tol, "loss {l} vs f32 {l32}");
        assert_eq!(g.dtype(), DType::F32);
        let err: f32 = g
            .to_vec()
            .iter()
            .zip(g32.to_vec())
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / g32.to_vec().iter().map(|b| b.abs()).sum::<f32>();
        assert!(err < tol * 3.0, "gradient relative error {err}");
    }
}

#[autocast(bf16)]
mod inline_region {
    use amp::prelude::*;

    pub fn project(x: &Tensor<f32>, w: &Tensor<f32>) -> Tensor<bf16> {
        x.matmul(w)
    }

    pub struct Head(pub Param);

    impl Head {
        pub fn apply(&self, x: &Tensor<f32>) -> Tensor<bf16> {
            x.linear(&self.0, None)
        }
    }
}

/// On an inline mod, every fn and every method of its impls is a region.
#[test]
fn inline_mod_regions() {
    let (x, w, _) = inputs();
    let t = inline_region::project(&x, &w.value().t());
    assert_eq!(
        t.to_vec(),
        x.to_bf16().matmul(&w.get::<bf16>().t()).to_vec()
    );
    let h = inline_region::Head(w.clone()).apply(&x);
    assert_eq!(h.dtype(), DType::BF16);
}

struct Scores(Vec<f32>);

impl Scores {
    fn softmax(&self) -> Vec<f32> {
        let total: f32 = self.0.iter().map(|v| v.exp()).sum();
        self.0.iter().map(|v| v.exp() / total).collect()
    }
}

#[autocast(bf16)]
fn non_tensor_values(scores: &Scores, values: &[f32]) -> (f32, f32, f32, usize, i64, Vec<f32>) {
    let e = f32::exp(1.0) + 2.0f32.exp();
    let total = values.iter().sum::<f32>();
    let it = values.iter();
    let again: f32 = it.sum();
    let n = values.len();
    let i = (3i64 * 4 + 1).pow(2) / 2;
    (e, total, again, n, i, scores.softmax())
}

/// Non-tensor receivers of op-named methods behave exactly as without the attribute.
#[test]
fn non_tensor_values_are_untouched() {
    let scores = Scores(vec![0.0, 1.0]);
    let (e, total, again, n, i, soft) = non_tensor_values(&scores, &[1.0, 2.5]);
    assert_eq!(e, f32::exp(1.0) + 2.0f32.exp());
    assert_eq!((total, again, n, i), (3.5, 3.5, 2, 84));
    assert_eq!(soft, scores.softmax());
}

trait Swish {
    fn swish_like(&self) -> Self;
}

impl<E: Float> Swish for Tensor<E> {
    fn swish_like(&self) -> Self {
        self.silu()
    }
}

#[autocast(bf16, f32 = [swish_like])]
fn with_override(x: &Tensor<f32>, w: &Param) -> Tensor<f32> {
    x.linear(w, None).swish_like()
}

/// Ops listed in an override run in the class given (here f32) on a tensor receiver.
#[test]
fn overrides_assign_a_class() {
    let (x, w, _) = inputs();
    let got = with_override(&x, &w);
    assert_eq!(
        got.to_vec(),
        x.to_bf16()
            .linear(&w.get::<bf16>(), None)
            .to_f32()
            .silu()
            .to_vec()
    );
}

#[autocast(bf16)]
fn returns(x: &Tensor<f32>, flag: u8) -> Result<Option<(Tensor<f32>, usize)>, String> {
    if flag == 0 {
        return Err("no".into());
    }
    if flag == 1 {
        return Ok(None);
    }
    let y = x.matmul(&x.t());
    Ok(Some((y, 3)))
}

/// Return values are cast to the declared type, through tuples, Option and Result, early returns too.
#[test]
fn return_values_take_the_declared_type() {
    let (x, _, _) = inputs();
    assert_eq!(returns(&x, 0).err(), Some("no".to_string()));
    assert!(matches!(returns(&x, 1), Ok(None)));
    let Ok(Some((y, n))) = returns(&x, 2) else {
        panic!("expected a value")
    };
    assert_eq!(n, 3);
    assert_eq!(
        y.to_vec(),
        x.to_bf16().matmul(&x.to_bf16().t()).to_f32().to_vec()
    );
}

#[autocast(bf16)]
fn promote_list(x: &Tensor<f32>) -> Tensor<f32> {
    let low = x.matmul(&x.t());
    let full = x.matmul(&x.t()).exp();
    Tensor::cat(&[low, full], 0)
}

/// `Tensor::cat` of a bf16 and an f32 tensor inside a region promotes to f32.
#[test]
fn cat_promotes_inside_a_region() {
    let (x, _, _) = inputs();
    let y = promote_list(&x);
    assert_eq!(y.shape(), &[10, 5]);
    let low = x.to_bf16().matmul(&x.to_bf16().t()).to_f32();
    assert_eq!(y.narrow(0, 0, 5).to_vec(), low.to_vec());
}

#[autocast(bf16)]
#[allow(clippy::type_complexity, clippy::borrowed_box)] // the point is to test these receivers
fn through_pointers(
    x: &mut Tensor<f32>,
    b: &Box<Tensor<f32>>,
    r: &std::rc::Rc<Tensor<f32>>,
    a: &std::sync::Arc<Tensor<f32>>,
    w: &Tensor<f32>,
) -> [DType; 4] {
    [
        x.matmul(w).dtype(),
        b.matmul(w).dtype(),
        r.matmul(w).dtype(),
        a.matmul(w).dtype(),
    ]
}

/// Receivers reached through `&mut`, `Box`, `Rc` and `Arc` run at the region's precision too.
#[test]
fn receivers_behind_pointers_follow_the_policy() {
    let (x, w, _) = inputs();
    let wt = w.value().t();
    let dtypes = through_pointers(
        &mut x.clone(),
        &Box::new(x.clone()),
        &std::rc::Rc::new(x.clone()),
        &std::sync::Arc::new(x.clone()),
        &wt,
    );
    assert_eq!(dtypes, [DType::BF16; 4]);
}

#[autocast(bf16)]
fn labels(x: &Tensor<f32>, w: &Param) -> (Tensor<i64>, Tensor<bool>) {
    let logits = x.linear(w, None);
    (logits.argmax(-1), logits.gt(&logits.zeros_like()))
}

#[autocast(bf16)]
#[allow(dead_code)]
fn not_written_yet(_x: &Tensor<f32>) -> Tensor<f32> {
    unreachable!("a stub body: only that it compiles under the attribute is tested")
}

/// Integer and bool tensors are returned as they are (not cast), and a stub body compiles.
#[test]
fn integer_and_bool_returns() {
    let (x, w, _) = inputs();
    let (idx, mask) = labels(&x, &w);
    assert_eq!((idx.shape(), mask.shape()), (&[5][..], &[5, 3][..]));
}

#[autocast(bf16)]
fn accumulate(x: &Tensor<f32>, ws: &[Param]) -> Tensor<f32> {
    let mut acc: Tensor<f32> = Tensor::zeros([5, 3]);
    for w in ws {
        acc = &acc + &x.linear(w, None);
    }
    acc
}

/// An annotation on a constructor keeps its type (only annotations on rewritten ops are relaxed).
#[test]
fn annotated_constructor_keeps_its_type() {
    let (x, w, _) = inputs();
    let total = accumulate(&x, &[w.clone(), w.clone()]);
    let one = x.to_bf16().linear(&w.get::<bf16>(), None).to_f32();
    assert_eq!(total.to_vec(), (&one + &one).to_vec());
}

struct Block<P: Policy> {
    w: Param,
    policy: std::marker::PhantomData<P>,
}

#[autocast(P)]
impl<P: Policy> Block<P> {
    /// A residual connection and a mask fill mix `Tensor<P::Low>` with f32 in generic code.
    fn forward(&self, x: &Tensor<f32>, mask: &Tensor<bool>) -> Tensor<f32> {
        let h = x.linear(&self.w, None).gelu();
        let residual = &h + x;
        let back = x + &h;
        let filled = h.where_(mask, &x.zeros_like());
        let normed = h.layer_norm(&[7], None, None, 1e-5);
        residual + back + filled + normed
    }

    const fn width() -> usize {
        7
    }
}

/// In `#[autocast(P)]` code the low type mixes with f32 both ways, and norms of low outputs are f32.
#[test]
fn generic_policy_mixes_low_and_f32() {
    let mut rng = Rng::new(4);
    let x = Tensor::<f32>::randn([3, 7], &mut rng);
    let mask = x.gt(&Tensor::zeros([1]));
    for dtype in [
        Block::<amp::policy::Bf16> {
            w: Param::new(Tensor::randn([7, 7], &mut rng)),
            policy: Default::default(),
        }
        .forward(&x, &mask)
        .dtype(),
        Block::<amp::policy::F16> {
            w: Param::new(Tensor::randn([7, 7], &mut rng)),
            policy: Default::default(),
        }
        .forward(&x, &mask)
        .dtype(),
    ] {
        assert_eq!(dtype, DType::F32);
    }
    assert_eq!(Block::<amp::policy::F32>::width(), 7);
}

/// A user module whose `forward` takes `&mut self` (dropout state, a cache).
struct Counter {
    calls: usize,
}

impl Counter {
    fn forward(&mut self, x: &Tensor<f32>) -> Tensor<f32> {
        self.calls += 1;
        x.clone()
    }
}

struct WithState {
    counter: Counter,
    w: Param,
}

#[autocast(bf16)]
impl WithState {
    fn step(&mut self, x: &Tensor<f32>) -> Tensor<f32> {
        let y = self.counter.forward(x);
        let mut local = Counter { calls: 0 };
        let z = local.forward(&y);
        z.linear(&self.w, None)
    }
}

/// `forward` on a user type taking `&mut self` works inside a region (the place is borrowed mutably).
#[test]
fn mutable_forward_of_a_user_module() {
    let (x, w, _) = inputs();
    let mut m = WithState {
        counter: Counter { calls: 0 },
        w,
    };
    assert_eq!(m.step(&x).dtype(), DType::F32);
    assert_eq!(m.counter.calls, 1);
}

#[autocast(P)]
fn bucket<P: Policy>(v: f32) -> u8 {
    match v {
        0.0..=1e5 => 0,
        _ => 1,
    }
}

#[autocast(bf16)]
mod with_trait {
    use amp::prelude::*;

    pub trait Score {
        fn weight(&self) -> &Tensor<f32>;
        fn score(&self, x: &Tensor<f32>) -> Tensor<bf16> {
            x.matmul(self.weight())
        }
    }
}

struct Scorer(Tensor<f32>);

impl with_trait::Score for Scorer {
    fn weight(&self) -> &Tensor<f32> {
        &self.0
    }
}

#[autocast(bf16)]
#[allow(dead_code)]
async fn later(x: &Tensor<f32>) -> Tensor<f32> {
    x.matmul(&x.t())
}

/// Float patterns are left alone; trait default methods in a region mod are rewritten; async fns compile.
#[test]
fn patterns_traits_and_async() {
    assert_eq!(
        (
            bucket::<amp::policy::F16>(3.0),
            bucket::<amp::policy::F16>(2e5)
        ),
        (0, 1)
    );
    use with_trait::Score;
    let (x, w, _) = inputs();
    assert_eq!(Scorer(w.value().t()).score(&x).dtype(), DType::BF16);
}
