"""The torch building blocks behind the neural estimators.

One of each, shared by :mod:`ephys2tx.models.bilstm` (attention BiLSTM, flat MLP
ablation) and :mod:`ephys2tx.models.transfer` (mouse -> human transfer), which
are thin scikit-learn estimators over them:

``tokenizer``
    :class:`~ephys2tx.models.nn.tokenizer.FamilyTokenizer`: feature families ->
    tokens (one linear adapter per family; a learned token for a family with no
    columns).
``encoder``
    :class:`~ephys2tx.models.nn.encoder.AttentionBiLSTMEncoder` (tokens -> BiLSTM ->
    attention or mean pooling -> embedding) and the flat
    :class:`~ephys2tx.models.nn.encoder.FlatMLPEncoder` ablation.
``heads``
    :class:`~ephys2tx.models.nn.heads.ArcFaceHead` (cosine logits, additive
    angular margin loss) and :class:`~ephys2tx.models.nn.heads.SoftmaxHead`.
``networks``
    The compositions: :class:`~ephys2tx.models.nn.networks.FamilyTokenBiLSTM`,
    :class:`~ephys2tx.models.nn.networks.FlatMLP` and
    :class:`~ephys2tx.models.nn.networks.TwoSpeciesNet`.
``losses``
    :func:`~ephys2tx.models.nn.losses.class_conditional_mmd` (species alignment).
``training``
    The one training loop, :func:`~ephys2tx.models.nn.training.train_epochs`, and the
    steps around it, in the manner of skorch: the
    :class:`~ephys2tx.models.nn.training.EarlyStopping` callback, the
    :func:`~ephys2tx.models.nn.training.smote_step` before the loop and the
    :class:`~ephys2tx.models.nn.training.TemperatureScaling` step after it.

This ``__init__`` imports nothing, so that ``import ephys2tx.models.nn.training``
costs only what that module needs.
"""
