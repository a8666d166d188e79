#[autocast(P)]
impl<P: Policy> Mlp<P> {
    fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
        x.linear(&self.w1, Some(&self.b1)).relu().linear(&self.w2, None)
    }

    #[keep_fp32]
    fn logsumexp(&self, x: &Tensor<f32>) -> Tensor<f32> {
        (x.exp() + 1.0).log()
    }
}
