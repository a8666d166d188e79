fn attention_block(x: &Tensor<f32>, w: &Param, y: &Tensor<i64>) -> Tensor<f32> {
    #[allow(unused_imports)]
    use ::amp::__private::autocast::prelude::*;
    static __AMP_SITE: ::amp::__private::autocast::RegionSite = ::amp::__private::autocast::RegionSite::new(
        ::core::concat!(::core::module_path!(), "::", "attention_block"),
        ::core::file!(),
        ::core::line!(),
        "bf16",
        &[
            ::amp::__private::autocast::OpSite {
                op: "linear",
                class: ::amp::__private::autocast::OpClass::Low,
                line: ::core::line!(),
            },
            ::amp::__private::autocast::OpSite {
                op: "gelu",
                class: ::amp::__private::autocast::OpClass::Same,
                line: ::core::line!(),
            },
            ::amp::__private::autocast::OpSite {
                op: "softmax",
                class: ::amp::__private::autocast::OpClass::F32,
                line: ::core::line!(),
            },
            ::amp::__private::autocast::OpSite {
                op: "cross_entropy",
                class: ::amp::__private::autocast::OpClass::F32,
                line: ::core::line!(),
            },
        ],
    );
    let __amp_region = ::amp::__private::autocast::enter::<
        ::amp::policy::Bf16,
    >(&__AMP_SITE);
    let h: Tensor<_> = (&::amp::__private::autocast::probe::<::amp::policy::Bf16, _>(&x))
        .__amp_low()
        .linear(
            w,
            ::core::option::Option::<&::amp::__private::autocast::NoTensor>::None,
        );
    let a = (&::amp::__private::autocast::probe::<::amp::policy::Bf16, _>(&h))
        .__amp_keep()
        .gelu();
    let p = (&::amp::__private::autocast::probe::<::amp::policy::Bf16, _>(&a))
        .__amp_full()
        .softmax(-1);
    {
        let __amp_value: Tensor<_> = (&::amp::__private::autocast::probe::<
            ::amp::policy::Bf16,
            _,
        >(&p))
            .__amp_full()
            .cross_entropy(y);
        ::amp::__private::autocast::ret::<f32, _>(__amp_value)
    }
}
