// sam2-tui's stand-in for react-pts-canvas 0.5.2 (unpublished from the npm registry since
// demo/frontend's yarn.lock pinned it): a <canvas> owning a pts CanvasSpace, reached
// through a ref ({getSpace, getForm, getCanvas}), calling onPts* back; every other prop
// goes to the canvas (the filmstrip's pointer handlers). Plain ESM, no build step.
import {createElement, forwardRef, useEffect, useImperativeHandle, useRef} from 'react';
import {CanvasSpace} from 'pts';

export const PtsCanvas = forwardRef(function PtsCanvas(
  {
    background = '#9ab',
    resize = true,
    retina = true,
    play = true,
    refresh = true,
    className,
    style,
    canvasStyle,
    onPtsReady,
    onPtsAnimate,
    onPtsResize,
    ...canvasProps
  },
  ref,
) {
  const canvas = useRef(null);
  const space = useRef(undefined);
  const form = useRef(undefined);
  // The latest callbacks, read when pts calls back (the space outlives renders).
  const callbacks = useRef({});
  callbacks.current = {onPtsReady, onPtsAnimate, onPtsResize};

  useImperativeHandle(ref, () => ({
    getSpace: () => space.current,
    getForm: () => form.current,
    getCanvas: () => canvas.current,
  }));

  useEffect(() => {
    const s = new CanvasSpace(canvas.current).setup({bgcolor: background, resize, retina});
    s.refresh(refresh);
    space.current = s;
    form.current = s.getForm();
    s.add({
      start: bound => callbacks.current.onPtsReady?.(s, form.current, bound),
      animate: (time, ftime) => callbacks.current.onPtsAnimate?.(s, form.current, time, ftime),
      resize: (size, evt) => callbacks.current.onPtsResize?.(s, form.current, size, evt),
    });
    return () => {
      s.dispose();
      space.current = undefined;
      form.current = undefined;
    };
    // Made once per mount, as 0.5.2 does; props are read when it is made.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  useEffect(() => {
    const s = space.current;
    if (s == null) return;
    if (play) {
      if (s.isPlaying) s.resume();
      else s.play();
    } else {
      s.playOnce(0);
    }
  });

  return createElement(
    'div',
    {className, style},
    createElement('canvas', {...canvasProps, ref: canvas, style: canvasStyle}),
  );
});
