# Passed to llama.cpp's cmake as CMAKE_PROJECT_INCLUDE (llama-cpp-sys-2
# forwards every CMAKE_* environment variable), so it runs after each
# project() call, after the -D options. llama-cpp-sys-2 0.1.161 forwards
# GGML_CPU_ARM_ARCH from the environment but then pins it to armv8-a on
# aarch64 Linux; this puts the environment's value back. A no-op when the
# variable is unset, so it is safe for every target.
if(DEFINED ENV{GGML_CPU_ARM_ARCH} AND NOT "$ENV{GGML_CPU_ARM_ARCH}" STREQUAL "")
  set(GGML_CPU_ARM_ARCH "$ENV{GGML_CPU_ARM_ARCH}" CACHE STRING "ggml: CPU architecture for ARM" FORCE)
endif()
