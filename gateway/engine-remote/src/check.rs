use nusa_engine::ModelMetadata;
use nusa_tensor::Tensor;

/// Checks a region's outputs against the local model's metadata: every
/// output the metadata names is there exactly once and nothing else is,
/// each has the datatype, rank and fixed dimensions of the metadata, the
/// batch dimension is `rows` when given, and the bytes agree with the shape.
///
/// A region may run another build of the model under the same name; an
/// answer that does not fit the local model must not be returned or cached.
/// To check an answer to a request for some outputs only, pass metadata
/// whose `outputs` are those.
pub fn check_outputs(
    metadata: &ModelMetadata,
    outputs: &[Tensor],
    rows: Option<usize>,
) -> Result<(), String> {
    for (i, t) in outputs.iter().enumerate() {
        if metadata.output(&t.name).is_none() {
            return Err(format!(
                "output '{}' is not an output of the model ({})",
                t.name,
                names(metadata)
            ));
        }
        if outputs[..i].iter().any(|o| o.name == t.name) {
            return Err(format!("output '{}' appears twice", t.name));
        }
    }
    for spec in &metadata.outputs {
        let Some(t) = outputs.iter().find(|t| t.name == spec.name) else {
            return Err(format!("output '{}' is missing", spec.name));
        };
        if t.datatype != spec.datatype {
            return Err(format!(
                "output '{}': datatype {} where the model gives {}",
                t.name, t.datatype, spec.datatype
            ));
        }
        let fits = t.shape.len() == spec.shape.len()
            && t.shape
                .iter()
                .zip(&spec.shape)
                .all(|(&got, &want)| want < 0 || got == want);
        if !fits {
            return Err(format!(
                "output '{}': shape {:?} does not fit the model's {:?} (-1 is any size)",
                t.name, t.shape, spec.shape
            ));
        }
        if let Some(rows) = rows {
            if t.shape.first().map(|&d| d as i128) != Some(rows as i128) {
                return Err(format!(
                    "output '{}': shape {:?} where the request has {rows} rows",
                    t.name, t.shape
                ));
            }
        }
        t.validate().map_err(|e| format!("output {e}"))?;
    }
    Ok(())
}

fn names(metadata: &ModelMetadata) -> String {
    metadata
        .outputs
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use nusa_engine::TensorSpec;
    use nusa_tensor::DataType;

    use super::*;

    fn meta() -> ModelMetadata {
        ModelMetadata {
            platform: "onnxruntime_onnx".into(),
            inputs: vec![],
            outputs: vec![
                TensorSpec {
                    name: "probs".into(),
                    datatype: DataType::Fp32,
                    shape: vec![-1, 10],
                },
                TensorSpec {
                    name: "label".into(),
                    datatype: DataType::Int64,
                    shape: vec![-1],
                },
            ],
            bytes_elements: Default::default(),
        }
    }

    fn tensor(name: &str, datatype: DataType, shape: Vec<i64>, bytes: usize) -> Tensor {
        Tensor {
            name: name.into(),
            datatype,
            shape,
            data: vec![0u8; bytes].into(),
        }
    }

    fn good() -> Vec<Tensor> {
        vec![
            tensor("label", DataType::Int64, vec![2], 16),
            tensor("probs", DataType::Fp32, vec![2, 10], 80),
        ]
    }

    #[test]
    fn accepts_a_fitting_answer_in_any_order() {
        check_outputs(&meta(), &good(), Some(2)).unwrap();
        check_outputs(&meta(), &good(), None).unwrap();
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let cases: Vec<(Vec<Tensor>, Option<usize>, &str)> = vec![
            (good()[..1].to_vec(), None, "missing"),
            (
                [good(), vec![tensor("extra", DataType::Fp32, vec![1], 4)]].concat(),
                None,
                "not an output",
            ),
            (
                [good(), vec![tensor("label", DataType::Int64, vec![2], 16)]].concat(),
                None,
                "twice",
            ),
            (
                vec![
                    tensor("label", DataType::Int32, vec![2], 8),
                    good()[1].clone(),
                ],
                None,
                "datatype",
            ),
            (
                vec![
                    good()[0].clone(),
                    tensor("probs", DataType::Fp32, vec![2, 5], 40),
                ],
                None,
                "does not fit",
            ),
            (
                vec![
                    good()[0].clone(),
                    tensor("probs", DataType::Fp32, vec![20], 80),
                ],
                None,
                "does not fit",
            ),
            (good(), Some(3), "3 rows"),
            (
                vec![
                    good()[0].clone(),
                    tensor("probs", DataType::Fp32, vec![2, 10], 79),
                ],
                None,
                "needs 80 bytes",
            ),
        ];
        for (outputs, rows, want) in cases {
            let e = check_outputs(&meta(), &outputs, rows).unwrap_err();
            assert!(e.contains(want), "{e} (wanted '{want}')");
        }
    }
}
