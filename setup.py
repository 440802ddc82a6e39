"""pip install of pose_ros for use without ROS: the library, the command-line tools and training.

The ROS build (messages, node, launch files) is ament_cmake: see CMakeLists.txt and package.xml.
`pip install .` gives the same Python package without the generated ``pose_ros.msg``; the training
scripts of ``training/`` install as ``pose_ros.training``.
"""

from setuptools import find_packages, setup

library_packages = find_packages(include=["pose_ros", "pose_ros.*"])
training_packages = ["pose_ros.training"]

setup(
    name="pose_ros",
    version="0.1.0",
    description="Real-time multi-person 2D human pose estimation for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=library_packages + training_packages,
    package_dir={"pose_ros.training": "training"},
    package_data={"pose_ros.training": ["configs/*.yaml"]},
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "Pillow>=9.0",
        "torch>=2.5",
        "torchvision>=0.20",
        "onnxruntime>=1.17",
        "onnx>=1.16",
        "PyYAML>=6.0",
        "scipy>=1.10",
        "tqdm>=4.66",
        # recordings (pose-ros-infer --bag)
        "rosbags>=0.10",
        "mcap>=1.1",
    ],
    extras_require={
        # evaluation with pycocotools, training logs
        "train": ["pycocotools>=2.0.7", "tensorboard>=2.16"],
        # engine 'triton': the pose network on a Triton Inference Server (docs/triton.md)
        "triton": ["tritonclient[grpc,http]>=2.50"],
    },
    entry_points={
        "console_scripts": [
            "pose-ros-infer = pose_ros.cli:main",
            "pose-ros-train = pose_ros.training.train:main",
            "pose-ros-eval = pose_ros.training.evaluate:main",
            "pose-ros-export = pose_ros.training.export:main",
        ],
    },
)
