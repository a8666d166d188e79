//! `dispatch!`: run code generic over the policy under a precision mode chosen at run time.

/// Runs `body` with the type name `P` bound to the policy of a [`Precision`](crate::train::Precision)
/// chosen at run time (a string from the command line, a config file). Evaluates to
/// `Result<T, PrecisionError>`: an unsupported mode (`"64-true"`) is an error, never a silent switch.
///
/// ```
/// use amp::prelude::*;
/// use amp::train::Precision;
///
/// #[autocast(P)]
/// fn scores<P: Policy>(x: &Tensor<f32>) -> Tensor<f32> {
///     x.matmul(&x.t()).softmax(-1)
/// }
///
/// let precision: Precision = "bf16-mixed".parse().unwrap();
/// let x = Tensor::<f32>::ones([2, 3]);
/// let y = amp::dispatch!(precision, P => scores::<P>(&x)).unwrap();
/// assert_eq!(y.shape(), &[2, 2]);
/// assert!(amp::dispatch!("64-true".parse::<Precision>().unwrap(), P => scores::<P>(&x)).is_err());
/// ```
#[macro_export]
macro_rules! dispatch {
    ($precision:expr, $policy:ident => $body:expr) => {
        match $crate::train::Precision::policy($precision) {
            ::core::result::Result::Ok($crate::train::PolicyKind::F32) => {
                #[allow(dead_code)]
                type $policy = $crate::policy::F32;
                ::core::result::Result::Ok($body)
            }
            ::core::result::Result::Ok($crate::train::PolicyKind::Bf16) => {
                #[allow(dead_code)]
                type $policy = $crate::policy::Bf16;
                ::core::result::Result::Ok($body)
            }
            ::core::result::Result::Ok($crate::train::PolicyKind::F16) => {
                #[allow(dead_code)]
                type $policy = $crate::policy::F16;
                ::core::result::Result::Ok($body)
            }
            ::core::result::Result::Err(e) => ::core::result::Result::Err(e),
        }
    };
}
