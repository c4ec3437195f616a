"""attention_lessons: helper package of the attention course.

Modules follow the course order and are imported on demand, so ``import attention_lessons``
is instant and the NumPy lessons never load TensorFlow.
"""

__version__ = "0.1.0"
