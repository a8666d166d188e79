fn mixed(q: &Tensor<f32>, k: &Tensor<f32>) -> Tensor<f32> {
    #[allow(unused_imports)]
    use ::amp::__private::autocast::prelude::*;
    static __AMP_SITE: ::amp::__private::autocast::RegionSite = ::amp::__private::autocast::RegionSite::new(
        ::core::concat!(::core::module_path!(), "::", "mixed"),
        ::core::file!(),
        ::core::line!(),
        "f16",
        &[
            ::amp::__private::autocast::OpSite {
                op: "matmul",
                class: ::amp::__private::autocast::OpClass::KeepF32,
                line: ::core::line!(),
            },
            ::amp::__private::autocast::OpSite {
                op: "t",
                class: ::amp::__private::autocast::OpClass::KeepF32,
                line: ::core::line!(),
            },
            ::amp::__private::autocast::OpSite {
                op: "/",
                class: ::amp::__private::autocast::OpClass::KeepF32,
                line: ::core::line!(),
            },
            ::amp::__private::autocast::OpSite {
                op: "softmax",
                class: ::amp::__private::autocast::OpClass::KeepF32,
                line: ::core::line!(),
            },
            ::amp::__private::autocast::OpSite {
                op: "*",
                class: ::amp::__private::autocast::OpClass::KeepF32,
                line: ::core::line!(),
            },
            ::amp::__private::autocast::OpSite {
                op: "sum",
                class: ::amp::__private::autocast::OpClass::KeepF32,
                line: ::core::line!(),
            },
        ],
    );
    let __amp_region = ::amp::__private::autocast::enter::<
        ::amp::policy::F16,
    >(&__AMP_SITE);
    let scores = (&::amp::__private::autocast::probe::<
        ::amp::policy::F32,
        _,
    >(
        (&::amp::__private::autocast::probe::<::amp::policy::F32, _>(&q))
            .__amp_low()
            .matmul(
                &(&::amp::__private::autocast::probe::<::amp::policy::F32, _>(&k))
                    .__amp_full()
                    .t(),
            ),
    ))
        .__amp_operand()
        / (&::amp::__private::autocast::probe::<::amp::policy::F32, _>(8.0))
            .__amp_operand();
    let scaled = {
        (&::amp::__private::autocast::probe::<
            ::amp::policy::F32,
            _,
        >(
            (&::amp::__private::autocast::probe::<::amp::policy::F32, _>(&scores))
                .__amp_full()
                .softmax(-1),
        ))
            .__amp_operand()
            * (&::amp::__private::autocast::probe::<::amp::policy::F32, _>(2.0))
                .__amp_operand()
    };
    let f = |t: &Tensor<f32>| {
        (&&::amp::__private::autocast::probe::<::amp::policy::F32, _>(&t))
            .__amp_sum()
            .sum(..)
    };
    {
        let __amp_value: Tensor<_> = f(&scaled);
        ::amp::__private::autocast::ret::<f32, _>(__amp_value)
    }
}
