"""Benchmarks of pose_ros: the pipeline (pipeline_bench) and the ROS node (node_bench). Run them
through scripts/ros-env (`make bench`), which keeps DDS on this machine."""
