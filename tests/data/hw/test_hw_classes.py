"""One test per hardware class, and one with none: which run is the cell's filter's choice.

tests/test_hw_classes.py runs this file under cells and --hw-class values.
"""

import unittest

from harness import HardwareClassification


class GenericTest(unittest.TestCase):
    hw_classification = HardwareClassification.GENERIC

    def test_generic(self):
        pass


class CpuTest(unittest.TestCase):
    hw_classification = HardwareClassification.CPU

    def test_cpu(self):
        pass


class AcceleratorTest(unittest.TestCase):
    hw_classification = HardwareClassification.ACCELERATOR

    def test_accelerator(self):
        pass

    def test_accelerator_again(self):
        pass


class NamedByStringTest(unittest.TestCase):
    hw_classification = "cuda"  # a plain string reads as the member of that name

    def test_cuda(self):
        pass


class UnclassifiedTest(unittest.TestCase):
    def test_unclassified(self):
        pass
