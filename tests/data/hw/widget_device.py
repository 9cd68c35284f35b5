"""A stand-in vendor plugin that adds a device type of its own: ``widget``.

A real out-of-tree accelerator (torch_npu, ...) renames torch's PrivateUse1 device and
registers its device module on import; this one does the same with a module that
answers "two devices" and has no kernels, so tests may name the device but not put
tensors on it. torch's device-type tests then make a class for it
(``ClsPRIVATEUSE1``, ``device_type == "widget"``).
"""

import types

import torch

NAME = "widget"

if torch._C._get_privateuse1_backend_name() != NAME:
    torch.utils.rename_privateuse1_backend(NAME)
    module = types.ModuleType(NAME)
    module.is_available = lambda: True
    module.device_count = lambda: 2
    module.current_device = lambda: 0
    module.set_device = lambda index: None
    module._is_in_bad_fork = lambda: False
    module.manual_seed_all = lambda seed: None
    torch._register_device_module(NAME, module)
