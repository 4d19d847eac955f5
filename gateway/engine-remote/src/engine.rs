use std::sync::Arc;

use nusa_engine::{BatchInput, Engine, EngineError, Health, ModelMetadata, RunFuture};
use nusa_tensor::{Tensor, TensorData};

use crate::{check_outputs, RegionClient, RegionError};

/// A model served by a region, behind the same seam as a local engine: the
/// scheduler hands it batches and gets outputs in the model's order.
pub struct RemoteEngine {
    client: Arc<RegionClient>,
    model: String,
    version: Option<u64>,
    /// The local model's metadata: the region's answers are checked against
    /// it, so a region cannot change what the gateway serves.
    metadata: Arc<ModelMetadata>,
}

impl RemoteEngine {
    pub fn new(
        client: Arc<RegionClient>,
        model: impl Into<String>,
        version: Option<u64>,
        metadata: ModelMetadata,
    ) -> RemoteEngine {
        RemoteEngine {
            client,
            model: model.into(),
            version,
            metadata: Arc::new(metadata),
        }
    }
}

impl Engine for RemoteEngine {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn run(&self, inputs: Vec<BatchInput>) -> RunFuture {
        let client = Arc::clone(&self.client);
        let model = self.model.clone();
        let version = self.version;
        let metadata = Arc::clone(&self.metadata);
        Box::pin(async move {
            let rows = if metadata.batchable() {
                inputs
                    .first()
                    .and_then(|i| i.shape.first())
                    .map(|&r| r as usize)
            } else {
                None
            };
            // A batch input becomes one tensor whose segments are all its
            // parts' segments: the same bytes in the same order as gathering
            // them, without the copy, since the body goes out as segments.
            let tensors: Vec<Tensor> = inputs
                .into_iter()
                .map(|b| Tensor {
                    data: TensorData::new(
                        b.parts
                            .iter()
                            .flat_map(|p| p.segments().iter().cloned())
                            .collect(),
                    ),
                    name: b.name,
                    datatype: b.datatype,
                    shape: b.shape,
                })
                .collect();
            for t in &tensors {
                t.validate()
                    .map_err(|e| EngineError::Input(format!("input {e}")))?;
            }
            let answer = client
                .infer(&model, version, &tensors, None, None)
                .await
                .map_err(engine_error)?;
            check_outputs(&metadata, &answer.outputs, rows)
                .map_err(|e| EngineError::Run(format!("region {}: {e}", client.name())))?;
            let mut outputs = answer.outputs;
            let mut ordered = Vec::with_capacity(metadata.outputs.len());
            for spec in &metadata.outputs {
                // check_outputs found every one of them exactly once.
                if let Some(pos) = outputs.iter().position(|t| t.name == spec.name) {
                    ordered.push(outputs.swap_remove(pos));
                }
            }
            Ok(ordered)
        })
    }

    /// Ready: whether the region is worth trying is the caller's circuit
    /// breaker's call, made from the errors `run` returns.
    fn health(&self) -> Health {
        Health::Ready
    }
}

/// A 400 from the region is about the input (it passed the gateway's checks
/// against the same metadata, so the model itself refused it); anything else
/// is the engine failing.
fn engine_error(e: RegionError) -> EngineError {
    match e.status() {
        Some(400) => EngineError::Input(e.to_string()),
        _ => EngineError::Run(e.to_string()),
    }
}
