"""An MLServer custom runtime that wraps onnxruntime with the same threads as
nusad's engine (one intra-op and one inter-op thread): the fair peer for
the inference path. Loaded by MLServer from the model folder's
model-settings.json ("implementation": "mlserver_runtime.OnnxRuntimeModel")."""
import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(self.settings.parameters.uri, opts,
                                             providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        y = self._session.run([self._output], {self._input: x})[0]
        return InferenceResponse(model_name=self.name,
                                 outputs=[NumpyCodec.encode_output(self._output, y)])
