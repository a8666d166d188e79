//! The lookup table of embeddings.

use super::linear::check_positive;
use super::{IsLayer, Layer, Module, join_name};
use crate::param::Param;
use crate::policy::Policy;
use crate::rng::Rng;
use crate::tensor::Tensor;

/// A table of `num_embeddings` vectors of size `embedding_dim`, looked up by id, as PyTorch's
/// `nn.Embedding` (without `padding_idx` or `max_norm`).
///
/// A lookup copies rows and does no arithmetic, so it runs on the f32 master weight both outside and
/// inside an `#[autocast]` region: the output is always `Tensor<f32>`, and the first op that uses it
/// decides its precision. The gradient reaches only the rows that were looked up.
///
/// ```
/// use amp_runtime::nn::Embedding;
/// use amp_runtime::{Rng, Tensor};
///
/// let emb = Embedding::new(10, 4, &mut Rng::new(0));
/// let ids = Tensor::<i64>::from_vec(vec![1, 7, 7], [3]);
/// assert_eq!(emb.forward(&ids).shape(), &[3, 4]);
/// ```
#[derive(Clone, Debug)]
pub struct Embedding {
    /// The table, of shape `[num_embeddings, embedding_dim]` (named `"weight"`).
    pub weight: Param,
}

impl Embedding {
    /// A table of `num_embeddings` vectors of size `embedding_dim`, drawn from N(0, 1) (PyTorch's default).
    ///
    /// Panics if either size is zero.
    #[track_caller]
    pub fn new(num_embeddings: usize, embedding_dim: usize, rng: &mut Rng) -> Self {
        check_positive(
            "Embedding::new",
            &[
                ("num_embeddings", num_embeddings),
                ("embedding_dim", embedding_dim),
            ],
        );
        let table = Tensor::<f32>::randn([num_embeddings, embedding_dim], rng);
        Embedding {
            weight: Param::named("weight", table),
        }
    }

    /// The number of vectors in the table.
    pub fn num_embeddings(&self) -> usize {
        self.weight.shape()[0]
    }

    /// The size of each vector.
    pub fn embedding_dim(&self) -> usize {
        self.weight.shape()[1]
    }

    /// The rows of the table for each id in `ids` (any shape): the output has shape
    /// `ids.shape() + [embedding_dim]`. Panics if an id is negative or not below `num_embeddings`.
    #[track_caller]
    pub fn forward(&self, ids: &Tensor<i64>) -> Tensor<f32> {
        self.weight.value().embedding(ids)
    }
}

impl Module for Embedding {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Param)) {
        f(join_name(prefix, "weight"), &self.weight);
    }
}

impl IsLayer for Embedding {}

/// Under any policy: a lookup in the f32 table (see [`Embedding`]).
impl Layer<Tensor<i64>> for Embedding {
    type Out<P: Policy> = Tensor<f32>;

    #[track_caller]
    fn forward_under<P: Policy>(&self, ids: &Tensor<i64>) -> Self::Out<P> {
        self.forward(ids)
    }
}
