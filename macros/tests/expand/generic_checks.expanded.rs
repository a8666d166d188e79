fn masked<P: Policy>(logits: &Tensor<f32>, target: &Tensor<f32>) -> Tensor<f32> {
    #[allow(unused_imports)]
    use ::amp::__private::autocast::prelude::*;
    static __AMP_SITE: ::amp::__private::autocast::RegionSite = ::amp::__private::autocast::RegionSite::new(
        ::core::concat!(::core::module_path!(), "::", "masked"),
        ::core::file!(),
        ::core::line!(),
        "P",
        &[
            ::amp::__private::autocast::OpSite {
                op: "sigmoid",
                class: ::amp::__private::autocast::OpClass::Same,
                line: ::core::line!(),
            },
            ::amp::__private::autocast::OpSite {
                op: "binary_cross_entropy",
                class: ::amp::__private::autocast::OpClass::F32,
                line: ::core::line!(),
            },
        ],
    );
    let __amp_region = ::amp::__private::autocast::enter::<P>(&__AMP_SITE);
    let shifted = logits
        * {
            const { ::amp::__private::autocast::assert_literal_fits::<P>(1000000000.0) };
            1e9
        };
    {
        let __amp_value: Tensor<_> = {
            const { ::amp::__private::autocast::assert_bce_allowed::<P>() };
            (&::amp::__private::autocast::probe::<
                P,
                _,
            >(
                (&::amp::__private::autocast::probe::<P, _>(&shifted))
                    .__amp_keep()
                    .sigmoid(),
            ))
                .__amp_full()
        }
            .binary_cross_entropy(target);
        ::amp::__private::autocast::ret::<f32, _>(__amp_value)
    }
}
