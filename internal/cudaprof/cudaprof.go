//go:build linux && cgo

// Package cudaprof brackets a region of a program for CUDA profilers that start collecting on request, such as
// `ncu --profile-from-start off`: Start calls the driver's cuProfilerStart and Stop its cuProfilerStop. The driver
// library is opened at run time (dlopen), so a binary that links this package runs on machines without CUDA; there
// Start and Stop return an error.
package cudaprof

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>

typedef int (*fn_void)(void);
typedef int (*fn_uint)(unsigned int);
typedef int (*fn_ptr)(void**);
typedef int (*fn_dev)(int*, int);
typedef int (*fn_retain)(void**, int);
typedef int (*fn_set)(void*);

// profiler calls cuProfilerStart (start != 0) or cuProfilerStop in the current context, making device 0's primary
// context current first when the calling thread has none (XLA runs its work in that context on other threads).
// Returns the CUresult, or a negative code when the driver or a symbol is missing.
static int profiler(int start) {
	void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
	if (!h) return -1;
	fn_uint init = (fn_uint)dlsym(h, "cuInit");
	fn_ptr get = (fn_ptr)dlsym(h, "cuCtxGetCurrent");
	fn_dev device = (fn_dev)dlsym(h, "cuDeviceGet");
	fn_retain retain = (fn_retain)dlsym(h, "cuDevicePrimaryCtxRetain");
	fn_set set = (fn_set)dlsym(h, "cuCtxSetCurrent");
	fn_void f = (fn_void)dlsym(h, start ? "cuProfilerStart" : "cuProfilerStop");
	if (!init || !get || !device || !retain || !set || !f) return -2;
	int r = init(0);
	if (r) return r;
	void* ctx = NULL;
	if ((r = get(&ctx))) return r;
	if (!ctx) {
		int dev = 0;
		if ((r = device(&dev, 0))) return r;
		if ((r = retain(&ctx, dev))) return r;
		if ((r = set(ctx))) return r;
	}
	return f();
}
*/
import "C"

import (
	"fmt"
	"runtime"
)

func call(start bool) error {
	runtime.LockOSThread() // the context is made current on this thread
	defer runtime.UnlockOSThread()
	s := 0
	name := "cuProfilerStop"
	if start {
		s, name = 1, "cuProfilerStart"
	}
	switch r := C.profiler(C.int(s)); {
	case r == -1:
		return fmt.Errorf("cudaprof: %s: libcuda.so.1 not found", name)
	case r == -2:
		return fmt.Errorf("cudaprof: %s: a driver symbol is missing from libcuda.so.1", name)
	case r != 0:
		return fmt.Errorf("cudaprof: %s: CUresult %d", name, int(r))
	}
	return nil
}

// Start asks an attached profiler to start collecting (cuProfilerStart).
func Start() error { return call(true) }

// Stop asks an attached profiler to stop collecting (cuProfilerStop).
func Stop() error { return call(false) }
