//! Building: the matched units, blocks and head loaded into this crate's `ResNet`, each
//! tensor's shape checked against the detected configuration.

use burn::module::{Param, RunningState};
use burn::tensor::{Device, Tensor, TensorData};

use super::matching::{Block, Head, Matcher, Norm, Unit};
use super::{Imported, InputLayout, check_finite, dims_of, floats, transpose};
use crate::data::Preprocess;
use crate::error::{Error, Result};
use crate::model::{BlockKind, ConvBn, ResNet, ResNetConfig, StridePlacement, depth_of};

/// What the matched units say about the network: its configuration, and how the file stores
/// BatchNorm.
struct Structure {
    config: ResNetConfig,
    /// BatchNorm folded into every convolution.
    folded: bool,
    /// Convolutions with a bias beside a separate BatchNorm (Keras).
    conv_bias: bool,
    epsilon: f64,
}

impl Matcher<'_> {
    pub(super) fn build(
        &self,
        stem: Unit,
        blocks: Vec<Block>,
        head: Head,
        layout: InputLayout,
        input_size: Option<usize>,
        device: &Device,
    ) -> Result<Imported> {
        let found = self.structure(&stem, &blocks, &head, layout)?;
        let mut model = found.config.init(device)?;
        self.load_units(&mut model, &found, stem, blocks, device)?;
        let head_layer = model.head.as_mut().expect("configured with classes");
        let described = |what: &str| format!("head.linear.{what} (of {})", self.path.display());
        check_finite(&head.weight, || described("weight"))?;
        check_finite(&head.bias, || described("bias"))?;
        // Burn's Linear keeps its weight as [features, classes].
        let w = transpose(&head.weight, head.classes, head.features);
        head_layer.linear.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(w, [head.features, head.classes]),
            device,
        ));
        head_layer.linear.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(head.bias, [head.classes]),
            device,
        )));

        let preprocess = match layout {
            InputLayout::Nhwc => Preprocess::Caffe,
            InputLayout::Nchw => Preprocess::Torch,
        };
        Ok(Imported {
            model,
            config: found.config,
            preprocess,
            layout,
            input_size,
            softmax: head.softmax,
            folded_batch_norm: found.folded,
            card: None,
        })
    }

    /// The configuration the matched units describe: the depth from the blocks per stage (a
    /// stage ends where a block's output width changes), where the stride sits, how BatchNorm
    /// is stored, its epsilon, the width and the head.
    fn structure(
        &self,
        stem: &Unit,
        blocks: &[Block],
        head: &Head,
        layout: InputLayout,
    ) -> Result<Structure> {
        let mut sizes = Vec::new();
        let mut last_width = 0;
        for block in blocks {
            let width = dims_of(&block.convs.last().expect("2 or 3 convs").weight)[0];
            if width != last_width {
                sizes.push(0);
                last_width = width;
            }
            *sizes.last_mut().expect("pushed") += 1;
        }
        let bottleneck = blocks.first().is_some_and(|b| b.convs.len() == 3);
        // A ResNet's bottleneck is a quarter of its output wide; torchvision's wide_resnet50_2
        // and wide_resnet101_2 are twice that, which the crate does not build.
        for block in blocks.iter().filter(|b| b.convs.len() == 3) {
            let [inner, out] = [&block.convs[0], &block.convs[2]].map(|u| dims_of(&u.weight)[0]);
            if inner * 4 != out {
                return Err(self.fail_unit(
                    &block.convs[0],
                    format!(
                        "a bottleneck {inner} channels wide inside for {out} out, where a ResNet's \
                         is a quarter of its output ({}): the file is a wide ResNet \
                         (torchvision's wide_resnet50_2 or wide_resnet101_2) or another variant, \
                         which this crate does not build (it builds ResNets: torchvision's \
                         resnet18 to resnet152, Keras's ResNet50 to ResNet152)",
                        out / 4
                    ),
                ));
            }
        }
        let kind = if bottleneck {
            BlockKind::Bottleneck
        } else {
            BlockKind::Basic
        };
        let Some(depth) = depth_of(kind, &sizes) else {
            return Err(self.fail_unit(
                stem,
                format!("blocks per stage {sizes:?} ({kind:?} blocks) match no ResNet depth"),
            ));
        };
        let placement = match blocks.get(sizes[0]).map(|b| b.convs[0].stride) {
            Some(2) if bottleneck => StridePlacement::FirstConv,
            _ => StridePlacement::MiddleConv,
        };
        let units = std::iter::once(stem).chain(
            blocks
                .iter()
                .flat_map(|b| b.convs.iter().chain(&b.shortcut)),
        );
        let separate_norm = units.clone().all(|u| !matches!(u.norm, Norm::Folded));
        let folded = units.clone().all(|u| matches!(u.norm, Norm::Folded));
        if !separate_norm && !folded {
            return Err(self.fail_unit(
                stem,
                "BatchNorm is folded into some convolutions but not others",
            ));
        }
        let conv_bias = separate_norm && units.clone().any(|u| u.bias.is_some());
        let epsilon = units
            .clone()
            .find_map(|u| match u.norm {
                // Stored as float32 in the file: 1e-5 arrives as 9.99999974e-6.
                Norm::Node(_, eps) => Some((eps as f32).to_string().parse().unwrap_or(eps)),
                _ => None,
            })
            .unwrap_or(match layout {
                InputLayout::Nhwc => 1.001e-5,
                InputLayout::Nchw => 1e-5,
            });
        let config = ResNetConfig::new(depth)
            .with_stride_placement(placement)
            .with_conv_bias(conv_bias)
            .with_batch_norm_epsilon(epsilon)
            .with_width(dims_of(&stem.weight)[0])
            .with_pooling(head.pooling)
            .with_num_classes(Some(head.classes));
        if head.features != config.feature_dim() {
            return Err(Error::ShapeMismatch {
                tensor: "head.linear.weight".into(),
                expected: vec![config.feature_dim(), head.classes],
                found: vec![head.features, head.classes],
            });
        }
        Ok(Structure {
            config,
            folded,
            conv_bias,
            epsilon,
        })
    }

    /// Loads the stem's and every block's units into `model`, each named as this crate names it.
    fn load_units(
        &self,
        model: &mut ResNet,
        found: &Structure,
        stem: Unit,
        blocks: Vec<Block>,
        device: &Device,
    ) -> Result<()> {
        let load = |target: &mut ConvBn, unit: &Unit, name: String| -> Result<()> {
            self.load_unit(target, unit, &name, found.conv_bias, found.epsilon, device)
        };
        load(&mut model.stem.conv, &stem, "stem.conv".into())?;
        let depth = found.config.depth;
        let mut blocks = blocks.into_iter();
        for (s, stage) in model.stages.iter_mut().enumerate() {
            for (b, target) in stage.blocks.iter_mut().enumerate() {
                let source = blocks.next().expect("counted into stages");
                for (c, (t, u)) in target.convs.iter_mut().zip(&source.convs).enumerate() {
                    load(t, u, format!("stages.{s}.blocks.{b}.convs.{c}"))?;
                }
                match (&mut target.shortcut, &source.shortcut) {
                    (Some(t), Some(u)) => load(t, u, format!("stages.{s}.blocks.{b}.shortcut"))?,
                    (None, None) => {}
                    _ => {
                        return Err(self.fail_unit(
                            &source.convs[0],
                            format!("stage {} block {b}: the shortcut is not where a ResNet{depth} has one", s + 1),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn load_unit(
        &self,
        target: &mut ConvBn,
        unit: &Unit,
        name: &str,
        conv_bias: bool,
        epsilon: f64,
        device: &Device,
    ) -> Result<()> {
        let expected = target.conv.dims_oihw().to_vec();
        let found = dims_of(&unit.weight);
        // The crate's own path for the tensor, the file's node and the file.
        let described = |what: &str| {
            format!(
                "{name}.{what} (ONNX node `{}` of {})",
                unit.node,
                self.path.display()
            )
        };
        if expected != found {
            return Err(Error::ShapeMismatch {
                tensor: described("conv.weight"),
                expected,
                found,
            });
        }
        let channels = expected[0];
        check_finite(&floats(&unit.weight), || described("conv.weight"))?;
        let tensor = |data: Vec<f32>, what: &str| -> Result<Tensor<1>> {
            check_finite(&data, || described(what))?;
            if data.len() != channels {
                return Err(Error::ShapeMismatch {
                    tensor: described(what),
                    expected: vec![channels],
                    found: vec![data.len()],
                });
            }
            Ok(Tensor::from_data(TensorData::new(data, [channels]), device))
        };
        target.conv.set_weight_oihw(Tensor::from_data(
            unit.weight.clone().convert::<f32>(),
            device,
        ));
        let bias = unit
            .bias
            .as_ref()
            .map(floats)
            .unwrap_or_else(|| vec![0.0; channels]);
        // What the normalization adds: identity statistics where the file has none.
        let identity_var = vec![(1.0 - epsilon) as f32; channels];
        let (gamma, beta, mean, var) = match &unit.norm {
            Norm::Node([g, b, m, v], _) => (g.clone(), b.clone(), m.clone(), v.clone()),
            Norm::Affine(scale, shift) => {
                let scale = if scale.len() == 1 {
                    vec![scale[0]; channels]
                } else {
                    scale.clone()
                };
                (scale, shift.clone(), vec![0.0; channels], identity_var)
            }
            Norm::Folded => (
                vec![1.0; channels],
                bias.clone(),
                vec![0.0; channels],
                identity_var,
            ),
        };
        target.conv.bias = if conv_bias {
            Some(Param::from_tensor(tensor(bias, "conv.bias")?))
        } else {
            None
        };
        target.bn.gamma = Param::from_tensor(tensor(gamma, "bn.gamma")?);
        target.bn.beta = Param::from_tensor(tensor(beta, "bn.beta")?);
        target.bn.running_mean = RunningState::new(tensor(mean, "bn.running_mean")?);
        // A variance at or below -epsilon makes BatchNorm's scale NaN or infinite, which
        // onnxruntime passes on as NaN logits and the folded path would hide.
        if let Some((i, v)) =
            (var.iter().enumerate()).find(|(_, v)| f64::from(**v) + epsilon <= 0.0)
        {
            return Err(Error::BadTensor {
                tensor: described("bn.running_var"),
                reason: format!(
                    "holds a variance of {v} at channel {i}, at or below minus the epsilon \
                     ({epsilon}): BatchNorm would divide by the square root of a number that is \
                     not positive (the file is damaged)"
                ),
            });
        }
        target.bn.running_var = RunningState::new(tensor(var, "bn.running_var")?);
        Ok(())
    }
}
