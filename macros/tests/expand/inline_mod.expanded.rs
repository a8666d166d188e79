mod model {
    pub fn project(x: &Tensor<f32>, w: &Tensor<f32>) -> Tensor<bf16> {
        #[allow(unused_imports)]
        use ::amp::__private::autocast::prelude::*;
        static __AMP_SITE: ::amp::__private::autocast::RegionSite = ::amp::__private::autocast::RegionSite::new(
            ::core::concat!(::core::module_path!(), "::", "project"),
            ::core::file!(),
            ::core::line!(),
            "bf16",
            &[
                ::amp::__private::autocast::OpSite {
                    op: "matmul",
                    class: ::amp::__private::autocast::OpClass::Low,
                    line: ::core::line!(),
                },
            ],
        );
        let __amp_region = ::amp::__private::autocast::enter::<
            ::amp::policy::Bf16,
        >(&__AMP_SITE);
        {
            let __amp_value: Tensor<_> = (&::amp::__private::autocast::probe::<
                ::amp::policy::Bf16,
                _,
            >(&x))
                .__amp_low()
                .matmul(w);
            ::amp::__private::autocast::ret::<bf16, _>(__amp_value)
        }
    }
    impl Head {
        pub fn apply(&self, x: &Tensor<f32>) -> Option<(Tensor<f32>, usize)> {
            #[allow(unused_imports)]
            use ::amp::__private::autocast::prelude::*;
            static __AMP_SITE: ::amp::__private::autocast::RegionSite = ::amp::__private::autocast::RegionSite::new(
                ::core::concat!(::core::module_path!(), "::", "Head::apply"),
                ::core::file!(),
                ::core::line!(),
                "bf16",
                &[
                    ::amp::__private::autocast::OpSite {
                        op: "linear",
                        class: ::amp::__private::autocast::OpClass::Low,
                        line: ::core::line!(),
                    },
                ],
            );
            let __amp_region = ::amp::__private::autocast::enter::<
                ::amp::policy::Bf16,
            >(&__AMP_SITE);
            if x.numel() == 0 {
                return None;
            }
            {
                let __amp_value: Option<(Tensor<_>, usize)> = Some((
                    (&::amp::__private::autocast::probe::<::amp::policy::Bf16, _>(&x))
                        .__amp_low()
                        .linear(
                            &self.0,
                            ::core::option::Option::<
                                &::amp::__private::autocast::NoTensor,
                            >::None,
                        ),
                    1,
                ));
                (__amp_value)
                    .map(|__amp_ok| {
                        let (__amp_ret0, __amp_ret1) = __amp_ok;
                        (
                            ::amp::__private::autocast::ret::<f32, _>(__amp_ret0),
                            __amp_ret1,
                        )
                    })
            }
        }
    }
}
