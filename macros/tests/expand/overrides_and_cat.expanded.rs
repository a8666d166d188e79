fn features(x: &Tensor<f32>, w: &Param, values: &[f32]) -> Tensor<f32> {
    #[allow(unused_imports)]
    use ::amp::__private::autocast::prelude::*;
    static __AMP_SITE: ::amp::__private::autocast::RegionSite = ::amp::__private::autocast::RegionSite::new(
        ::core::concat!(::core::module_path!(), "::", "features"),
        ::core::file!(),
        ::core::line!(),
        "bf16",
        &[
            ::amp::__private::autocast::OpSite {
                op: "sum",
                class: ::amp::__private::autocast::OpClass::F32,
                line: ::core::line!(),
            },
            ::amp::__private::autocast::OpSite {
                op: "linear",
                class: ::amp::__private::autocast::OpClass::Low,
                line: ::core::line!(),
            },
            ::amp::__private::autocast::OpSite {
                op: "swish",
                class: ::amp::__private::autocast::OpClass::F32,
                line: ::core::line!(),
            },
            ::amp::__private::autocast::OpSite {
                op: "cat",
                class: ::amp::__private::autocast::OpClass::Promote,
                line: ::core::line!(),
            },
            ::amp::__private::autocast::OpSite {
                op: "exp",
                class: ::amp::__private::autocast::OpClass::F32,
                line: ::core::line!(),
            },
        ],
    );
    let __amp_region = ::amp::__private::autocast::enter::<
        ::amp::policy::Bf16,
    >(&__AMP_SITE);
    let total = (&&::amp::__private::autocast::probe::<
        ::amp::policy::Bf16,
        _,
    >(values.iter()))
        .__amp_sum()
        .sum::<f32>();
    let h = (&::amp::__private::autocast::probe::<
        ::amp::policy::Bf16,
        _,
    >(
        (&::amp::__private::autocast::probe::<::amp::policy::Bf16, _>(&x))
            .__amp_low()
            .linear(
                w,
                ::core::option::Option::<&::amp::__private::autocast::NoTensor>::None,
            ),
    ))
        .__amp_full()
        .swish();
    {
        let __amp_value: Tensor<_> = ::amp::__private::autocast::cat(
            ::amp::__private::autocast::Cons(
                h,
                ::amp::__private::autocast::Cons(
                    (&::amp::__private::autocast::probe::<::amp::policy::Bf16, _>(&x))
                        .__amp_full()
                        .exp(),
                    ::amp::__private::autocast::Nil,
                ),
            ),
            1,
        ) * total;
        ::amp::__private::autocast::ret::<f32, _>(__amp_value)
    }
}
