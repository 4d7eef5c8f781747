from models.embedder_export import export_embedder, export_synthesizer
from models.losses import huber, map_loss, relative_error, sphere_mean
from models.resnet_v2 import Conv2DFixedPadding, Conv2DTransposeFixedPadding, pad_2d
from models.students import build_student, build_synthesis
from models.training import Task, TrainConfig, Trainer, make_strategy, train
from models.hub_export import export_reusable_saved_model
from models.spherical_layers import (SphericalBatchNormalization, SphericalConv,
                                     SphericalGlobalAveragePooling)
from models.teacher import build_teacher, export_teacher
