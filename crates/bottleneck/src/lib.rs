//! bottleneck: autoencoders trained on normal data and put to work.

pub mod data;
pub mod error;
pub mod io;
pub mod metrics;
pub mod model;
pub mod score;

pub use error::{Error, Result};
#[cfg(test)]
mod probe {
    use super::model::*;
    use burn::optim::{AdamConfig, GradientsParams};
    use burn::prelude::*;

    #[test]
    fn train_step_runs() {
        let device = Device::flex().autodiff();
        device.seed(1);
        let spec = ConvSpec::for_image(1, 16, Some(8)).unwrap();
        let mut model = ConvAutoencoder::new(&spec, &device);
        let mut optim = AdamConfig::new().init();
        let x = Tensor::<4>::random([4, 1, 16, 16], burn::tensor::Distribution::Default, &device);
        for _ in 0..3 {
            let y = model.forward(x.clone());
            let loss = (y - x.clone()).powf_scalar(2.0).mean();
            println!("{}", loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-3, model, grads);
        }
        let v = model.valid();
        let xi = Tensor::<4>::zeros([2, 1, 16, 16], &device.inner());
        let out = v.forward(xi).into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(out.len(), 512);
    }
}
