"""The networks' bias initialisers by --bias_init name: Keras initializer names, so that the
command line can list them without importing Keras.

'glorot': the original's (TF1 `tf.get_variable` defaults to Glorot uniform, which on a 1-D
shape [n] draws U(-sqrt(3/n), sqrt(3/n)); Keras' GlorotUniform computes the same fans);
'zeros': the Keras default.
"""

BIAS_INITS = {"glorot": "glorot_uniform", "zeros": "zeros"}
