impl<P: Policy> Mlp<P> {
    fn forward(&self, x: &Tensor<f32>) -> Tensor<f32> {
        #[allow(unused_imports)]
        use ::amp::__private::autocast::prelude::*;
        static __AMP_SITE: ::amp::__private::autocast::RegionSite = ::amp::__private::autocast::RegionSite::new(
            ::core::concat!(::core::module_path!(), "::", "Mlp<P>::forward"),
            ::core::file!(),
            ::core::line!(),
            "P",
            &[
                ::amp::__private::autocast::OpSite {
                    op: "linear",
                    class: ::amp::__private::autocast::OpClass::Low,
                    line: ::core::line!(),
                },
                ::amp::__private::autocast::OpSite {
                    op: "relu",
                    class: ::amp::__private::autocast::OpClass::Same,
                    line: ::core::line!(),
                },
                ::amp::__private::autocast::OpSite {
                    op: "linear",
                    class: ::amp::__private::autocast::OpClass::Low,
                    line: ::core::line!(),
                },
            ],
        );
        let __amp_region = ::amp::__private::autocast::enter::<P>(&__AMP_SITE);
        {
            let __amp_value: Tensor<_> = (&::amp::__private::autocast::probe::<
                P,
                _,
            >(
                (&::amp::__private::autocast::probe::<
                    P,
                    _,
                >(
                    (&::amp::__private::autocast::probe::<P, _>(&x))
                        .__amp_low()
                        .linear(&self.w1, Some(&self.b1)),
                ))
                    .__amp_keep()
                    .relu(),
            ))
                .__amp_low()
                .linear(
                    &self.w2,
                    ::core::option::Option::<&::amp::__private::autocast::NoTensor>::None,
                );
            ::amp::__private::autocast::ret::<f32, _>(__amp_value)
        }
    }
    fn logsumexp(&self, x: &Tensor<f32>) -> Tensor<f32> {
        #[allow(unused_imports)]
        use ::amp::__private::autocast::prelude::*;
        static __AMP_SITE: ::amp::__private::autocast::RegionSite = ::amp::__private::autocast::RegionSite::new(
            ::core::concat!(::core::module_path!(), "::", "Mlp<P>::logsumexp"),
            ::core::file!(),
            ::core::line!(),
            "keep_fp32",
            &[
                ::amp::__private::autocast::OpSite {
                    op: "exp",
                    class: ::amp::__private::autocast::OpClass::KeepF32,
                    line: ::core::line!(),
                },
                ::amp::__private::autocast::OpSite {
                    op: "+",
                    class: ::amp::__private::autocast::OpClass::KeepF32,
                    line: ::core::line!(),
                },
                ::amp::__private::autocast::OpSite {
                    op: "log",
                    class: ::amp::__private::autocast::OpClass::KeepF32,
                    line: ::core::line!(),
                },
            ],
        );
        let __amp_region = ::amp::__private::autocast::enter::<
            ::amp::policy::F32,
        >(&__AMP_SITE);
        {
            let __amp_value: Tensor<_> = (&::amp::__private::autocast::probe::<
                ::amp::policy::F32,
                _,
            >(
                (&::amp::__private::autocast::probe::<
                    ::amp::policy::F32,
                    _,
                >(
                    (&::amp::__private::autocast::probe::<::amp::policy::F32, _>(&x))
                        .__amp_full()
                        .exp(),
                ))
                    .__amp_operand()
                    + (&::amp::__private::autocast::probe::<::amp::policy::F32, _>(1.0))
                        .__amp_operand(),
            ))
                .__amp_full()
                .log();
            ::amp::__private::autocast::ret::<f32, _>(__amp_value)
        }
    }
}
