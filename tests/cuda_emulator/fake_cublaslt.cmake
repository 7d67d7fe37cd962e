# The host fake of cuBLASLt (fake_cublaslt.cpp; see README_cublaslt.md) as
# target `fake_cublaslt`: <build>/fake_cublaslt/libcublasLt.so.13, soname
# libcublasLt.so.13, alone in its directory so that
#   DEEPCORE_CUBLASLT_PATH=<build>/fake_cublaslt
# cannot pick up anything else. Use: include(tests/cuda_emulator/fake_cublaslt.cmake)
# from a CMakeLists.txt (C++ enabled). Needs only the CUDA toolkit's headers
# (cuda_runtime.h, library_types.h): nothing is linked from CUDA.
#
# Without CMake, from the repository root:
#   g++ -std=c++17 -O2 -fPIC -shared -fvisibility=hidden -Icuda -I/usr/local/cuda/include tests/cuda_emulator/fake_cublaslt.cpp -Wl,-soname,libcublasLt.so.13 -ldl -o libcublasLt.so.13

get_filename_component(_deepcore_fake_lt_root "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)

set(_deepcore_fake_lt_include "")
if(NOT CUDAToolkit_INCLUDE_DIRS)
  find_package(CUDAToolkit QUIET)
endif()
if(CUDAToolkit_INCLUDE_DIRS)
  set(_deepcore_fake_lt_include ${CUDAToolkit_INCLUDE_DIRS})
else()
  find_path(DEEPCORE_CUDA_RUNTIME_INCLUDE cuda_runtime.h
            HINTS ENV CUDA_HOME ENV CUDA_PATH PATH_SUFFIXES include
            PATHS /usr/local/cuda /usr/local/cuda-13.0 /usr/local/cuda-13)
  if(DEEPCORE_CUDA_RUNTIME_INCLUDE)
    set(_deepcore_fake_lt_include ${DEEPCORE_CUDA_RUNTIME_INCLUDE})
  endif()
endif()

if(NOT _deepcore_fake_lt_include)
  message(STATUS "fake_cublaslt: no CUDA headers (cuda_runtime.h) found; target not defined")
else()
  add_library(fake_cublaslt SHARED ${CMAKE_CURRENT_LIST_DIR}/fake_cublaslt.cpp)
  target_include_directories(fake_cublaslt PRIVATE ${_deepcore_fake_lt_root}/cuda ${_deepcore_fake_lt_include})
  target_compile_features(fake_cublaslt PRIVATE cxx_std_17)
  target_link_libraries(fake_cublaslt PRIVATE ${CMAKE_DL_LIBS})
  # libcublasLt.so.13; with no SOVERSION, CMake makes the file name the soname.
  set_target_properties(fake_cublaslt PROPERTIES
    OUTPUT_NAME cublasLt
    PREFIX lib
    SUFFIX .so.13
    CXX_VISIBILITY_PRESET hidden
    POSITION_INDEPENDENT_CODE ON
    LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fake_cublaslt)
endif()
