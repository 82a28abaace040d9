"""The multimodal product classifier.

* `sparse`: TF-IDF (title words and char n-grams, description words) + three averaged linear
  models (LinearSVC, NB-SVM, LinearSVC on a second view of the text).
* `text_nn`: TF-IDF-weighted embedding network trained from scratch (PyTorch).
* `transformer`: optional pretrained French transformer (CamemBERT...) fine-tuned on the
  texts; off by default, needs the `transformer` extra (`transformers` imported lazily).
* `image`: compact CNN trained from scratch on small images (PyTorch).
* `fusion`: temperature scaling and log-linear late fusion, fit on the validation split.
* `pipeline.ProductClassifier`: the whole inference pipeline as one object.
* `pyfunc`: the classifier as one self-contained MLflow pyfunc model.

Nothing is imported here: `import rakuten_mlops.models` stays cheap (no torch).
"""
