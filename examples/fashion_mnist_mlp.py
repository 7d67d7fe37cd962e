"""The chapter's classifier: a 784-300-100-10 MLP on Fashion-MNIST, with the
learning curves drawn when matplotlib is installed.

    python examples/fashion_mnist_mlp.py
"""
import deepcore as dc
from deepcore.datasets import load_fashion_mnist

(X_train_full, y_train_full), (X_test, y_test) = load_fashion_mnist()
X_train, y_train = X_train_full[:-5000] / 255.0, y_train_full[:-5000]
X_valid, y_valid = X_train_full[-5000:] / 255.0, y_train_full[-5000:]
X_test = X_test / 255.0
class_names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

dc.set_random_seed(42)
model = dc.Sequential([
    dc.layers.Input(shape=[28, 28]),
    dc.layers.Flatten(),
    dc.layers.Dense(300, activation="relu", kernel_initializer="he_normal"),
    dc.layers.Dense(100, activation="relu", kernel_initializer="he_normal"),
    dc.layers.Dense(10, activation="softmax"),
])
model.summary()
model.compile(loss="sparse_categorical_crossentropy",
              optimizer=dc.optimizers.SGD(learning_rate=0.01, momentum=0.9, nesterov=True),
              metrics=["accuracy"])
history = model.fit(X_train, y_train, epochs=10, validation_data=(X_valid, y_valid))
print("test [loss, accuracy]:", model.evaluate(X_test, y_test))

y_proba = model.predict(X_test[:3]).round(2)
print("first three test images:", [class_names[i] for i in y_proba.argmax(axis=1)], y_proba)

try:
    history.plot(path="fashion_mnist_learning_curves.png")  # deepcore.plot.learning_curves
    print("learning curves written to fashion_mnist_learning_curves.png")
except ImportError as e:
    print(f"({e})")
