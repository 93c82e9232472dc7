"""daian-tf: install with `pip install -c requirements/constraints-py310.txt -e .`."""

from setuptools import find_packages, setup

setup(
    name="daian-tf",
    version="0.1.0",
    description="DAIAN (intent-aware CTR for trigger-induced recommendation) in Keras 3 "
    "on TensorFlow, with a TFX pipeline and TF Serving export",
    python_requires=">=3.10,<3.11",
    packages=find_packages(include=["daian_tf*", "tfx_pipeline*", "serving*"]),
    package_data={"serving": ["config/*.pbtxt", "k8s/*.yaml", "cc/*.cc"], "": ["*.yaml"],
                  "daian_tf.data": ["flink_conf/config.yaml"]},
    install_requires=[
        "tfx[kfp]==1.16.0",
        "tensorflow==2.16.2",
        "keras==3.12.4",
        "tf-keras==2.16.0",
        "tensorflow-transform==1.16.0",
        "apache-beam==2.74.0",
        "tensorflow-serving-api==2.16.1",
        "grpcio",
        "dill",
        "pyarrow",
        "pandas",
        "numpy",
        "PyYAML",
        "tqdm==4.70.1",
        "matplotlib==3.9.2",
        "psutil",
        "prometheus_client",
    ],
    extras_require={"test": ["pytest", "pytest-xdist", "scikit-learn"]},
    entry_points={
        "console_scripts": ["daian=daian_tf.cli:main"],
        # commands of the packages above the library (daian_tf/cli.py loads them)
        "daian_tf.commands": [
            "pipeline = tfx_pipeline.cli:add_pipeline_command",
            "quickstart = tfx_pipeline.cli:add_quickstart_command",
            "serve = serving.cli:add_serve_command",
            "score = serving.cli:add_score_command",
            "load-test = serving.cli:add_load_test_command",
            "check-export = serving.cli:add_check_export_command",
        ],
    },
)
