"""Tagging with a trained model: the backends that run its network (``engines``), the predictor (text in,
labels, spans, confidences and intent out; ``predictor``) and its answers (``predictions``)."""
