"""How good a model is: seqeval metrics in the data's scheme (``metrics``), confidence calibration
(``calibration``), reports and plots (``reporting``), and evaluating a saved artifact (``evaluation``)."""
