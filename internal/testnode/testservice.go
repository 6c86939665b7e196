package testnode

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// MaxPayloadSize is the largest response payload served; larger requests get
// InvalidArgument. It keeps every response under grpc-go's default 4 MiB
// receive limit.
const MaxPayloadSize = 4<<20 - 64

// testService implements grpc-go's interop TestService: payloads of the
// requested sizes, responses streamed as requests arrive.
type testService struct {
	testgrpc.UnimplementedTestServiceServer
}

type (
	outputRequest  = testgrpc.StreamingOutputCallRequest
	outputResponse = testgrpc.StreamingOutputCallResponse
)

// EmptyCall answers an empty message.
func (testService) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	return &testgrpc.Empty{}, nil
}

// UnaryCall answers a payload of the requested size, or the requested status.
func (testService) UnaryCall(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if err := echoStatus(req.GetResponseStatus()); err != nil {
		return nil, err
	}
	payload, err := newPayload(req.GetResponseSize())
	if err != nil {
		return nil, err
	}
	return &testgrpc.SimpleResponse{Payload: payload}, nil
}

// CacheableUnaryCall behaves as UnaryCall.
func (s testService) CacheableUnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return s.UnaryCall(ctx, req)
}

// StreamingOutputCall sends one response per response parameter.
func (testService) StreamingOutputCall(req *outputRequest, stream grpc.ServerStreamingServer[outputResponse]) error {
	return sendOutputs(stream, req)
}

// StreamingInputCall answers the total payload size received once the client
// closes its side.
func (testService) StreamingInputCall(stream grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
	var total int
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
		}
		if err != nil {
			return err
		}
		total += len(req.GetPayload().GetBody())
	}
}

// FullDuplexCall answers each request as it arrives, until the client closes.
func (testService) FullDuplexCall(stream grpc.BidiStreamingServer[outputRequest, outputResponse]) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := sendOutputs(stream, req); err != nil {
			return err
		}
	}
}

// HalfDuplexCall buffers every request until the client closes, then answers
// them in order.
func (testService) HalfDuplexCall(stream grpc.BidiStreamingServer[outputRequest, outputResponse]) error {
	var reqs []*outputRequest
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		reqs = append(reqs, req)
	}
	for _, req := range reqs {
		if err := sendOutputs(stream, req); err != nil {
			return err
		}
	}
	return nil
}

// outputSender is the sending side of the streams that answer outputRequests.
type outputSender interface {
	Send(*outputResponse) error
	Context() context.Context
}

// sendOutputs answers req: its status if it asks for one, else a payload per
// response parameter, each after the requested interval.
func sendOutputs(stream outputSender, req *outputRequest) error {
	if err := echoStatus(req.GetResponseStatus()); err != nil {
		return err
	}
	for _, p := range req.GetResponseParameters() {
		if err := pause(stream.Context(), p.GetIntervalUs()); err != nil {
			return err
		}
		payload, err := newPayload(p.GetSize())
		if err != nil {
			return err
		}
		if err := stream.Send(&outputResponse{Payload: payload}); err != nil {
			return err
		}
	}
	return nil
}

// newPayload returns a payload of size zero bytes.
func newPayload(size int32) (*testgrpc.Payload, error) {
	if size < 0 || size > MaxPayloadSize {
		return nil, status.Errorf(codes.InvalidArgument, "payload size %d not in [0, %d]", size, MaxPayloadSize)
	}
	return &testgrpc.Payload{Type: testgrpc.PayloadType_COMPRESSABLE, Body: make([]byte, size)}, nil
}

// echoStatus returns the status a request asks to be answered with, if any.
func echoStatus(s *testgrpc.EchoStatus) error {
	if s.GetCode() == 0 {
		return nil
	}
	return status.Error(codes.Code(s.GetCode()), s.GetMessage())
}

// pause waits us microseconds, or until ctx ends.
func pause(ctx context.Context, us int32) error {
	if us <= 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(us) * time.Microsecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}
