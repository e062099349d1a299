"""Using a trained model: texts -> scores, pipelines, labelling files across processes, ONNX export and
the onnxruntime classifier. `finetune.inference.onnx_classifier` imports without torch, so this
package's `__init__` imports nothing."""
