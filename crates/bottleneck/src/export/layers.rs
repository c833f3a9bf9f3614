//! The networks as ONNX nodes: each function mirrors a `forward` in `model/` and reads the
//! weights from the same module, so the graph computes what scoring computes.

use burn::module::Param;
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::nn::{BatchNorm, Linear, PaddingConfig2d};
use burn::prelude::*;

use super::graph::{Attr, Graph};
use crate::model::denoise::Block;
use crate::model::dense::NEGATIVE_SLOPE;
use crate::model::{ConvAutoencoder, DenoiseNet, DenseAutoencoder, SegmentNet};

/// Shape and values of a tensor, as ONNX wants them.
fn values<const D: usize>(t: Tensor<D>) -> (Vec<usize>, Vec<f32>) {
    let dims = t.dims().to_vec();
    let v = t.into_data().convert::<f32>().try_into_vec::<f32>();
    (dims, v.expect("float32 weights"))
}

fn initializer<const D: usize>(g: &mut Graph, hint: &str, t: Tensor<D>) -> String {
    let (dims, v) = values(t);
    g.f32s(hint, &dims, &v)
}

/// The inputs of a weighted node: `x`, the weight and, when the layer has one, the bias.
fn weighted<const D: usize>(
    g: &mut Graph,
    x: &str,
    hint: &str,
    weight: Tensor<D>,
    bias: Option<&Param<Tensor<1>>>,
) -> Vec<String> {
    let mut inputs = vec![
        x.to_string(),
        initializer(g, &format!("{hint}_weight"), weight),
    ];
    if let Some(b) = bias {
        inputs.push(initializer(g, &format!("{hint}_bias"), b.val()));
    }
    inputs
}

/// A 2-D convolution (ONNX `Conv` has burn's weight layout, `[out, in, kh, kw]`).
pub fn conv(g: &mut Graph, x: &str, conv: &Conv2d) -> String {
    let (top, left, bottom, right) = match conv.padding {
        PaddingConfig2d::Explicit(t, l, b, r) => (t, l, b, r),
        PaddingConfig2d::Valid => (0, 0, 0, 0),
        PaddingConfig2d::Same => unreachable!("bottleneck's networks pad explicitly"),
    };
    let inputs = weighted(g, x, "conv", conv.weight.val(), conv.bias.as_ref());
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let ints = |v: [usize; 2]| Attr::Ints(v.iter().map(|&x| x as i64).collect());
    g.op(
        "Conv",
        &refs,
        vec![
            ("kernel_shape", ints(conv.kernel_size)),
            ("strides", ints(conv.stride)),
            ("dilations", ints(conv.dilation)),
            ("group", Attr::Int(conv.groups as i64)),
            (
                "pads",
                Attr::Ints(vec![top as i64, left as i64, bottom as i64, right as i64]),
            ),
        ],
    )
}

/// A transposed 2-D convolution (ONNX `ConvTranspose` has burn's weight layout,
/// `[in, out / groups, kh, kw]`).
pub fn conv_transpose(g: &mut Graph, x: &str, deconv: &ConvTranspose2d) -> String {
    let inputs = weighted(g, x, "deconv", deconv.weight.val(), deconv.bias.as_ref());
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let ints = |v: [usize; 2]| Attr::Ints(v.iter().map(|&x| x as i64).collect());
    let [ph, pw] = deconv.padding;
    g.op(
        "ConvTranspose",
        &refs,
        vec![
            ("kernel_shape", ints(deconv.kernel_size)),
            ("strides", ints(deconv.stride)),
            ("dilations", ints(deconv.dilation)),
            ("group", Attr::Int(deconv.groups as i64)),
            ("output_padding", ints(deconv.padding_out)),
            (
                "pads",
                Attr::Ints(vec![ph as i64, pw as i64, ph as i64, pw as i64]),
            ),
        ],
    )
}

/// A dense layer: `Gemm` with burn's `[in, out]` weight as B.
pub fn linear(g: &mut Graph, x: &str, layer: &Linear) -> String {
    let inputs = weighted(g, x, "linear", layer.weight.val(), layer.bias.as_ref());
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    g.op("Gemm", &refs, vec![])
}

/// Batch normalisation with the running statistics (inference).
pub fn batch_norm(g: &mut Graph, x: &str, norm: &BatchNorm) -> String {
    let scale = initializer(g, "bn_scale", norm.gamma.val());
    let bias = initializer(g, "bn_bias", norm.beta.val());
    let mean = initializer(g, "bn_mean", norm.running_mean.value());
    let var = initializer(g, "bn_var", norm.running_var.value());
    g.op(
        "BatchNormalization",
        &[x, &scale, &bias, &mean, &var],
        vec![("epsilon", Attr::Float(norm.epsilon as f32))],
    )
}

fn leaky_relu(g: &mut Graph, x: &str, slope: f64) -> String {
    g.op(
        "LeakyRelu",
        &[x],
        vec![("alpha", Attr::Float(slope as f32))],
    )
}

/// [`ConvAutoencoder::encode`] and [`ConvAutoencoder::decode`] of `x`
/// `[batch, channels, size, size]`: the codes `[batch, latent]` and the reconstruction.
pub fn conv_autoencoder(g: &mut Graph, x: &str, net: &ConvAutoencoder) -> (String, String) {
    let slope = net.activation.negative_slope;
    let mut h = x.to_string();
    for layer in &net.encoder {
        let c = conv(g, &h, layer);
        h = leaky_relu(g, &c, slope);
    }
    let flat = g.op("Flatten", &[&h], vec![("axis", Attr::Int(1))]);
    let code = linear(g, &flat, &net.to_latent);
    let up = linear(g, &code, &net.from_latent);
    let mut h = leaky_relu(g, &up, slope);
    let ch = net.decoder[0].weight.dims()[0];
    let flat_len = net.from_latent.weight.dims()[1];
    let grid = ((flat_len / ch) as f64).sqrt().round() as i64;
    h = g.reshape(&h, &[-1, ch as i64, grid, grid]);
    for layer in &net.decoder {
        let c = conv_transpose(g, &h, layer);
        h = leaky_relu(g, &c, slope);
    }
    let out = conv(g, &h, &net.output);
    let recon = g.op("Sigmoid", &[&out], vec![]);
    (code, recon)
}

/// What [`dense_autoencoder`] gives: the code (mean), the log-variance of a variational
/// model, and the reconstruction from the mean.
pub struct DenseOutputs {
    pub code: String,
    pub log_var: Option<String>,
    pub recon: String,
}

/// [`DenseAutoencoder::encode`] then [`DenseAutoencoder::decode`] of `x` `[batch, width]`
/// (already joined with the mask for a masked network).
pub fn dense_autoencoder(g: &mut Graph, x: &str, net: &DenseAutoencoder) -> DenseOutputs {
    let mut h = x.to_string();
    for (i, layer) in net.encoder.iter().enumerate() {
        h = linear(g, &h, layer);
        if let Some(norm) = net.encoder_norm.get(i) {
            h = batch_norm(g, &h, norm);
        }
        h = leaky_relu(g, &h, NEGATIVE_SLOPE);
    }
    let code = linear(g, &h, &net.to_latent);
    let log_var = net.to_log_var.as_ref().map(|l| linear(g, &h, l));
    let mut h = code.clone();
    for (i, layer) in net.decoder.iter().enumerate() {
        h = linear(g, &h, layer);
        if let Some(norm) = net.decoder_norm.get(i) {
            h = batch_norm(g, &h, norm);
        }
        h = leaky_relu(g, &h, NEGATIVE_SLOPE);
    }
    let recon = linear(g, &h, &net.output);
    DenseOutputs {
        code,
        log_var,
        recon,
    }
}

/// [`DenoiseNet::forward`] of `x` `[batch, channels, h, w]` (sides multiples of the
/// network's stride multiple).
pub fn denoise_net(g: &mut Graph, x: &str, net: &DenoiseNet) -> String {
    let h = unet(g, x, &net.down, &net.up, &net.merge);
    let noise = conv(g, &h, &net.output);
    g.bin("Sub", x, &noise)
}

/// [`SegmentNet::forward`]: the anomaly logits `[batch, 1, h, w]` of images `x` beside
/// their reconstructions `recon`.
pub fn segment_net(g: &mut Graph, x: &str, recon: &str, net: &SegmentNet) -> String {
    let joined = g.op("Concat", &[x, recon], vec![("axis", Attr::Int(1))]);
    let h = unet(g, &joined, &net.down, &net.up, &net.merge);
    conv(g, &h, &net.output)
}

/// `denoise::unet_features` of `x`: the full-resolution features of a U-Net's layers.
fn unet(
    g: &mut Graph,
    x: &str,
    down: &[Block],
    up: &[ConvTranspose2d],
    merge: &[Conv2d],
) -> String {
    let mut skips = Vec::with_capacity(down.len());
    let mut h = x.to_string();
    for block in down {
        let a = conv(g, &h, &block.first);
        let a = g.op("Relu", &[&a], vec![]);
        let b = conv(g, &a, &block.second);
        h = g.op("Relu", &[&b], vec![]);
        skips.push(h.clone());
    }
    skips.pop();
    for (up, merge) in up.iter().zip(merge) {
        let skip = skips.pop().expect("one skip per level");
        let u = conv_transpose(g, &h, up);
        let u = g.op("Relu", &[&u], vec![]);
        let joined = g.bin("Add", &u, &skip);
        let m = conv(g, &joined, merge);
        h = g.op("Relu", &[&m], vec![]);
    }
    h
}
