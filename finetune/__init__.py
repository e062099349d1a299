"""finetune: fine-tune pretrained Chinese word vectors and encoders for text classification.

Importing the package registers the BiLSTM + attention model with transformers' Auto classes, so

    import finetune
    from transformers import pipeline
    classifier = pipeline("text-classification", model="runs/reviews")

works on a saved model. And it is light: `import finetune` loads neither torch nor transformers, so the
`finetune` command answers `--help`, `--version` and its argument errors at once.

How both hold: registration (done in one place, `finetune.models.bilstm_attention`, which needs torch)
waits for the Auto classes. If transformers' `configuration_auto` (which every Auto class and `pipeline()`
import) is loaded already, it happens now; else a finder on `sys.meta_path` watches transformers' modules
being imported and registers once the import that brought `configuration_auto` in has finished - its
outermost module, not midway, when transformers' modules would be half-initialised - then steps aside.
Importing transformers for anything else (`HfArgumentParser`, which parses the recipes' flags) loads no
torch. `finetune.BiLSTMAttentionConfig`, `BiLSTMAttentionForSequenceClassification` and `JiebaTokenizer`
are loaded on first use (PEP 562).

Where torch or transformers is not installed (a server of exported models), the package imports
without them: `finetune.inference.onnx_classifier.OnnxClassifier` needs only onnxruntime, numpy and the
segmenter.
"""

import importlib
import sys
import threading
import warnings

__version__ = "0.1.0"

__all__ = ["BiLSTMAttentionConfig", "BiLSTMAttentionForSequenceClassification", "JiebaTokenizer"]

_MODELS = "finetune.models.bilstm_attention"  # importing it registers the model with the Auto classes
_AUTO = "transformers.models.auto.configuration_auto"


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'finetune' has no attribute {name!r}")
    models = importlib.import_module(_MODELS)
    if not hasattr(models, name):  # the package imports without torch or transformers, the model does not
        raise AttributeError(f"finetune.{name} needs torch and transformers")
    return getattr(models, name)


def _register() -> None:
    try:
        importlib.import_module(_MODELS)
    except Exception as error:  # the user's import of transformers must not fail because of ours
        warnings.warn(f"finetune: the model is not registered with transformers' Auto classes: {error!r}", stacklevel=2)


class _CountingLoader:
    """A transformers module's loader, which tells the hook when the module starts and ends executing."""

    def __init__(self, loader, hook: "_RegisterAfterAutoImport"):
        self.loader, self.hook = loader, hook

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.hook.depth.value = getattr(self.hook.depth, "value", 0) + 1
        try:
            self.loader.exec_module(module)
        finally:
            self.hook.depth.value -= 1
        if self.hook.depth.value == 0:
            self.hook.imported(module)

    def __getattr__(self, name):  # get_source, get_resource_reader, is_package...: the real loader's
        return getattr(self.loader, name)


class _RegisterAfterAutoImport:
    """On `sys.meta_path`: wraps the loader of each transformers module imported, counting how deep the
    imports nest in each thread; registers when an outermost one has finished and the Auto classes are in."""

    def __init__(self):
        self.depth = threading.local()
        self.lock = threading.Lock()

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] != "transformers":
            return None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _CountingLoader(spec.loader, self)
                return spec
        return None

    def imported(self, module) -> None:
        auto = sys.modules.get(_AUTO)
        # In another thread's import still (the one that just ran is done, if not yet marked so): later
        if auto is None or (auto is not module and getattr(auto.__spec__, "_initializing", False)):
            return
        with self.lock:
            if self not in sys.meta_path:
                return
            sys.meta_path.remove(self)
        _register()


if _AUTO in sys.modules:
    _register()
else:
    sys.meta_path.insert(0, _RegisterAfterAutoImport())
